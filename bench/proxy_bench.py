"""Proxy benchmark: the gateway against the same load sent straight to the upstream.

    python bench/proxy_bench.py [--duration 10] [--no-telemetry-comparison] [--make-run]

Starts a local upstream that answers at once (plain, and streams of 20 content
chunks plus usage), starts the gateway with one uvicorn worker and telemetry on,
drives load with wrk (plain requests) and an aiohttp client (streams), and
prints each figure beside the same load sent directly to the upstream.
Telemetry is handed to the real broker (REDIS_URL, else the embedded one);
no Celery worker runs during the load, so export work does not share the CPU.

With --make-run the gateway runs as `make run` runs it: the Makefile's uvicorn flags,
multiprocess Prometheus metrics (PROMETHEUS_MULTIPROC_DIR), its log level, and the
Makefile's Celery worker on the same machine exporting what the load produces.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello in one word."}]}
STREAM_BODY = CHAT_BODY | {"stream": True}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def make_run_commands() -> tuple[list[str], list[str]]:
    """`make run`'s uvicorn flags and Celery worker arguments, read from the Makefile."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    flags = re.search(r"^UVICORN_FLAGS \?= (.+)$", makefile, re.M).group(1).split()
    worker = re.search(r"^WORKER = \$\(BIN\)/celery (.+)$", makefile, re.M).group(1).split()
    return flags, worker


class Stack:
    """The upstream and the gateway as separate processes, as in production."""

    def __init__(self, *, telemetry: bool, multiprocess_metrics: bool = False, worker: bool = False, flags=None):
        self.workdir = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
        self.worker = worker
        # The gateway's own flags beyond host, port and workers (None: this benchmark's).
        self.flags = flags or ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        self.upstream_port = free_port()
        self.gateway_port = free_port()
        self.env = os.environ | {
            "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
            "GATEWAY_VAR_DIR": str(self.workdir),
            "OPENAI_BASE_URL": f"http://127.0.0.1:{self.upstream_port}/v1",
            "OPENAI_API_KEY": "sk-bench",
            "TELEMETRY_ENABLED": "true" if telemetry else "false",
        }
        if flags is None:  # make run logs at its default level; this benchmark quiets the gateway
            self.env["LOG_LEVEL"] = "WARNING"
        if "DATABASE_URL" not in os.environ:
            self.env["DATABASE_URL"] = f"sqlite:///{self.workdir / 'bench.sqlite3'}"
        if multiprocess_metrics:
            (self.workdir / "prometheus").mkdir()
            self.env["PROMETHEUS_MULTIPROC_DIR"] = str(self.workdir / "prometheus")
        self.processes: list[subprocess.Popen] = []

    def start(self) -> Stack:
        self.processes.append(
            subprocess.Popen(
                [PYTHON, "-m", "tests.provider_server", "--port", str(self.upstream_port)],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.DEVNULL,
            )
        )
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=self.env, check=True, stdout=subprocess.DEVNULL
        )
        issued = subprocess.run(
            [PYTHON, "manage.py", "issue_key", "--org", "bench", "--project", "load"],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        self.key = issued.stdout.strip().splitlines()[-1]
        self.gateway = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "uvicorn",
                "gateway_project.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.gateway_port),
                "--workers",
                "1",
                *self.flags,
            ],
            cwd=ROOT,
            env=self.env,
        )
        self.processes.append(self.gateway)
        if self.worker:
            _, worker_arguments = make_run_commands()
            self.processes.append(
                subprocess.Popen(
                    [PYTHON, "-m", "celery", *worker_arguments],
                    cwd=ROOT,
                    env=self.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        wait_for_port(self.upstream_port)
        wait_for_port(self.gateway_port)
        return self

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}/v1/chat/completions"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/v1/chat/completions"

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.gateway.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- Plain requests with wrk ---------------------------------------------------

WRK_SCRIPT = textwrap.dedent(
    """
    wrk.method = "POST"
    wrk.body = '{body}'
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer {key}"
    done = function(summary, latency, requests)
      io.write(string.format("P50_US %d\\n", latency:percentile(50)))
      io.write(string.format("P99_US %d\\n", latency:percentile(99)))
      io.write(string.format("REQUESTS %d\\n", summary.requests))
      io.write(string.format("NON2XX %d\\n", summary.errors.status))
      io.write(string.format("SOCKET_ERRORS %d\\n", summary.errors.connect + summary.errors.read
        + summary.errors.write + summary.errors.timeout))
      io.write(string.format("RPS %.1f\\n", summary.requests / (summary.duration / 1e6)))
    end
    """
)


def wrk(url: str, key: str, *, connections: int, duration: int, rss_probe=None) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(body=json.dumps(CHAT_BODY), key=key))
    threads = min(2, connections)
    command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "-s", script.name, url]
    peak_rss = [0.0]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.25):
            peak_rss[0] = max(peak_rss[0], rss_probe())

    sampler = threading.Thread(target=sample, daemon=True) if rss_probe else None
    if sampler:
        sampler.start()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    stop.set()
    os.unlink(script.name)
    figures = dict(re.findall(r"^([A-Z0-9_]+) ([\d.]+)$", output, re.M))
    result = {name: float(value) for name, value in figures.items()}
    result["PEAK_RSS_MB"] = peak_rss[0]
    return result


# --- Streams with aiohttp ----------------------------------------------------------


async def one_stream(session, url, key) -> tuple[float, float, list[str], set[str]]:
    started = time.perf_counter()
    first = None
    contents, ids = [], set()
    headers = {"Authorization": f"Bearer {key}"}
    async with session.post(
        url, json=STREAM_BODY | {"stream_options": {"include_usage": True}}, headers=headers
    ) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        buffer = b""
        async for piece in response.content.iter_any():
            if first is None:
                first = time.perf_counter()
            buffer += piece
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: {"):
                    continue
                chunk = json.loads(event[6:])
                ids.add(chunk["id"])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    contents.append(chunk["choices"][0]["delta"]["content"])
    return (first - started) * 1000, (time.perf_counter() - started) * 1000, contents, ids


async def sequential_streams(url, key, count) -> tuple[float, float]:
    async with aiohttp.ClientSession() as session:
        for _ in range(20):  # warm up connections and caches
            await one_stream(session, url, key)
        results = [await one_stream(session, url, key) for _ in range(count)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


async def concurrent_streams(url, key, count) -> tuple[int, int]:
    expected = [f"tok{i} " for i in range(20)]
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        results = await asyncio.gather(*(one_stream(session, url, key) for _ in range(count)), return_exceptions=True)
    errors = sum(1 for r in results if isinstance(r, BaseException))
    damaged = sum(1 for r in results if not isinstance(r, BaseException) and (r[2] != expected or len(r[3]) != 1))
    return errors, damaged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--streams", type=int, default=300, help="sequential streams for the TTFB figures")
    parser.add_argument("--no-telemetry-comparison", action="store_true")
    parser.add_argument("--make-run", action="store_true", help="run the gateway and a worker as `make run` does")
    args = parser.parse_args()

    if args.make_run:
        flags, _ = make_run_commands()
        like = {"multiprocess_metrics": True, "worker": True, "flags": flags}
    else:
        like = {}
    stack = Stack(telemetry=True, **like).start()
    try:
        key = stack.key
        wrk(stack.gateway_url, key, connections=8, duration=3)  # warm-up
        direct_c1 = wrk(stack.upstream_url, key, connections=1, duration=args.duration)
        gateway_c1 = wrk(stack.gateway_url, key, connections=1, duration=args.duration)
        direct_c32 = wrk(stack.upstream_url, key, connections=32, duration=args.duration)
        gateway_c32 = wrk(stack.gateway_url, key, connections=32, duration=args.duration, rss_probe=stack.rss_mb)
        direct_ttfb, direct_whole = asyncio.run(sequential_streams(stack.upstream_url, key, args.streams))
        gateway_ttfb, gateway_whole = asyncio.run(sequential_streams(stack.gateway_url, key, args.streams))
        stream_errors, stream_damaged = asyncio.run(concurrent_streams(stack.gateway_url, key, 256))
        rss_after = stack.rss_mb()
    finally:
        stack.stop()

    off_c32 = None
    if not args.no_telemetry_comparison:
        quiet = Stack(telemetry=False, **like).start()
        try:
            wrk(quiet.gateway_url, quiet.key, connections=8, duration=3)
            off_c32 = wrk(quiet.gateway_url, quiet.key, connections=32, duration=args.duration)
        finally:
            quiet.stop()

    ms = 1 / 1000
    rows = [
        ("Non-streaming p50 at concurrency 1 (ms)", direct_c1["P50_US"] * ms, gateway_c1["P50_US"] * ms),
        ("Throughput at concurrency 32 (req/s)", direct_c32["RPS"], gateway_c32["RPS"]),
        ("Streaming time to first byte, median (ms)", direct_ttfb, gateway_ttfb),
        ("Whole 21-chunk stream, median (ms)", direct_whole, gateway_whole),
    ]
    print(f"\n{'figure':46} {'direct':>10} {'gateway':>10} {'added':>10}")
    for name, direct, gateway in rows:
        added = gateway - direct if "ms" in name else gateway / direct * 100
        unit = "ms" if "ms" in name else "% of direct"
        print(f"{name:46} {direct:10.2f} {gateway:10.2f} {added:10.2f} {unit}")
    errors = gateway_c32["NON2XX"] + gateway_c32["SOCKET_ERRORS"]
    print(f"{'Errors at concurrency 32':46} {direct_c32['NON2XX'] + direct_c32['SOCKET_ERRORS']:10.0f} {errors:10.0f}")
    print(f"{'256 concurrent streams: errors / damaged':46} {'':>10} {stream_errors:>5} / {stream_damaged}")
    print(f"{'Gateway worker RSS, peak under load (MB)':46} {'':>10} {gateway_c32['PEAK_RSS_MB']:10.1f}")
    print(f"{'Gateway worker RSS after all runs (MB)':46} {'':>10} {rss_after:10.1f}")
    if off_c32:
        change = (gateway_c32["RPS"] - off_c32["RPS"]) / off_c32["RPS"] * 100
        print(
            f"{'Throughput telemetry off vs on (req/s)':46} {off_c32['RPS']:10.1f} {gateway_c32['RPS']:10.1f}"
            f" {change:+9.1f}%"
        )


if __name__ == "__main__":
    main()
