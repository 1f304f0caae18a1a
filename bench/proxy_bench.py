"""Proxy benchmark: the gateway against the same load sent straight to the upstream.

    python bench/proxy_bench.py [--duration 10] [--no-telemetry-comparison] [--make-run]
    python bench/proxy_bench.py --otlp [--rounds 3] [--duration 10]
    python bench/proxy_bench.py --budget [--rounds 3]   # a budget and two limits on the key, vs none
    python bench/proxy_bench.py --two-deployment-group [--rounds 3] [--duration 10]

Starts a local upstream that answers at once (plain, and streams of 20 content
chunks plus usage), starts the gateway with one uvicorn worker and telemetry on,
drives load with wrk (plain requests) and an aiohttp client (streams), and
prints each figure beside the same load sent directly to the upstream.
Telemetry is handed to the real broker (REDIS_URL, else the embedded one);
no Celery worker runs during the load, so export work does not share the CPU.

With --otlp it measures tracing instead: three gateways (tracing off, sampling probability 0.1,
always on) export to a local OTLP/HTTP receiver that accepts and discards, and their throughput
and CPU per request at concurrency 32 are measured in interleaved rounds, so a busy shared machine
affects all three alike. Their records are built but then dropped, not published (no broker).

With --budget, two gateways run side by side, one whose key has a budget, a requests-per-minute
and a tokens-per-minute limit (all far above the load, so every request is admitted, counted in
Redis and settled), and one without; their runs are interleaved, round after round, so that
whatever else the machine is doing falls on both. Needs REDIS_URL.

With --two-deployment-group it compares, on one gateway, a model served by a group of two
deployments (both the local upstream, weighted random) with the same model on today's single
upstream route; runs alternate between the two, round after round, so that other load on the
machine falls on both alike, and each figure is the median of its rounds.

With --make-run the gateway runs as `make run` runs it: the Makefile's uvicorn flags and
flush interval, multiprocess Prometheus metrics (PROMETHEUS_MULTIPROC_DIR), its log level, and the
Makefile's Celery worker on the same machine exporting what the load produces; it also prints
the gateway's and the worker's CPU per request at concurrency 32 (the worker's counted until it
has exported that load), steadier figures than throughput on a busy machine.
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
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello in one word."}]}
STREAM_BODY = CHAT_BODY | {"stream": True}
BENCH_DEPLOYMENT_ENV = {
    "SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "GATEWAY_ENCRYPTION_KEY": "YmVuY2gtb25seS1mZXJuZXQta2V5LTAxMjM0NTY3ODk=",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
}
GROUP_MODEL = "bench-group"
# Two deployments of one shared group, both the local upstream under the model the single route sends.
CREATE_GROUP = """
from proxy.models import Deployment, ModelGroup
group, _ = ModelGroup.objects.get_or_create(org=None, name={name!r})
for name in ("one", "two"):
    Deployment.objects.update_or_create(group=group, name=name, defaults=dict(
        provider="openai", base_url={base_url!r}, upstream_model="gpt-4o-mini", weight=1))
"""


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


def make_run_env() -> dict[str, str]:
    """The settings `make run` gives the gateway beyond the defaults, read from the Makefile."""
    makefile = (ROOT / "Makefile").read_text()
    interval = re.search(r"^RUN_TELEMETRY_FLUSH_INTERVAL \?= (.+)$", makefile, re.M).group(1).strip()
    return {"TELEMETRY_FLUSH_INTERVAL": os.environ.get("TELEMETRY_FLUSH_INTERVAL", interval)}


class Stack:
    """The upstream and the gateway as separate processes, as in production."""

    def __init__(
        self,
        *,
        telemetry: bool,
        extra_env: dict[str, str] | None = None,
        key_options: tuple[str, ...] = (),
        root: Path = ROOT,
        multiprocess_metrics: bool = False,
        worker: bool = False,
        flags=None,
    ):
        self.key_options = key_options
        self.root = root
        self.workdir = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
        self.worker = worker
        # The gateway's own flags beyond host, port and workers (None: this benchmark's).
        self.flags = flags or ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        self.upstream_port = free_port()
        self.gateway_port = free_port()
        untraced = {name: "" for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")}
        self.env = (
            os.environ
            | untraced
            | {
                "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
                "GATEWAY_VAR_DIR": str(self.workdir),
                "OPENAI_BASE_URL": f"http://127.0.0.1:{self.upstream_port}/v1",
                "OPENAI_API_KEY": "sk-bench",
                "TELEMETRY_ENABLED": "true" if telemetry else "false",
            }
            | (extra_env or {})
        )
        if flags is None:  # make run logs at its default level; this benchmark quiets the gateway
            self.env["LOG_LEVEL"] = "WARNING"
        if "DATABASE_URL" not in os.environ:
            self.env["DATABASE_URL"] = f"sqlite:///{self.workdir / 'bench.sqlite3'}"
        if multiprocess_metrics:
            (self.workdir / "prometheus").mkdir()
            self.env["PROMETHEUS_MULTIPROC_DIR"] = str(self.workdir / "prometheus")
        # A database URL makes the run a deployment, which must have keys of its own (gateway_project.safety).
        self.env = BENCH_DEPLOYMENT_ENV | self.env
        self.processes: list[subprocess.Popen] = []

    def create_group(self) -> None:
        script = CREATE_GROUP.format(name=GROUP_MODEL, base_url=f"http://127.0.0.1:{self.upstream_port}/v1")
        subprocess.run([PYTHON, "manage.py", "shell", "-c", script], cwd=self.root, env=self.env, check=True)

    def start(self) -> Stack:
        self.processes.append(
            subprocess.Popen(
                [PYTHON, "-m", "tests.provider_server", "--port", str(self.upstream_port)],
                cwd=self.root,
                env=self.env,
                stdout=subprocess.DEVNULL,
            )
        )
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput"],
            cwd=self.root,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        issued = subprocess.run(
            [PYTHON, "manage.py", "issue_key", "--org", "bench", "--project", "load", *self.key_options],
            cwd=self.root,
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
            cwd=self.root,
            env=self.env,
        )
        self.processes.append(self.gateway)
        self.worker_process = None
        if self.worker:
            _, worker_arguments = make_run_commands()
            self.worker_process = subprocess.Popen(
                [PYTHON, "-m", "celery", *worker_arguments],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.processes.append(self.worker_process)
        wait_for_port(self.upstream_port)
        wait_for_port(self.gateway_port)
        return self

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}/v1/chat/completions"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/v1/chat/completions"

    def cpu_seconds(self) -> float:
        """User and system CPU of the gateway process, all its threads (the span exporter's included)."""
        fields = Path(f"/proc/{self.gateway.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def worker_cpu_seconds(self) -> float:
        """User and system CPU of the Celery worker and its pool processes, those alive now."""
        total, pending = 0.0, [self.worker_process.pid]
        while pending:
            pid = pending.pop()
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending.extend(int(child) for child in (task / "children").read_text().split())
            except FileNotFoundError:  # gone meanwhile
                continue
        return total

    def worker_cpu_until_idle(self, *, idle: float = 2.0, timeout: float = 120.0) -> float:
        """The worker's CPU seconds once it has exported what the load left (no CPU for `idle` s)."""
        deadline = time.monotonic() + timeout
        last = self.worker_cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(idle)
            now = self.worker_cpu_seconds()
            if now - last < 0.02 * idle:
                return now
            last = now
        return last

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


def wrk(url: str, key: str, *, connections: int, duration: int, rss_probe=None, model: str | None = None) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        body = CHAT_BODY | {"model": model} if model else CHAT_BODY
        script.write(WRK_SCRIPT.format(body=json.dumps(body), key=key))
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


async def one_stream(session, url, key, model=None) -> tuple[float, float, list[str], set[str]]:
    started = time.perf_counter()
    first = None
    contents, ids = [], set()
    headers = {"Authorization": f"Bearer {key}"}
    body = STREAM_BODY | {"stream_options": {"include_usage": True}} | ({"model": model} if model else {})
    async with session.post(url, json=body, headers=headers) as response:
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


async def sequential_streams(url, key, count, model=None) -> tuple[float, float]:
    async with aiohttp.ClientSession() as session:
        for _ in range(20):  # warm up connections and caches
            await one_stream(session, url, key, model)
        results = [await one_stream(session, url, key, model) for _ in range(count)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


async def concurrent_streams(url, key, count) -> tuple[int, int]:
    expected = [f"tok{i} " for i in range(20)]
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        results = await asyncio.gather(*(one_stream(session, url, key) for _ in range(count)), return_exceptions=True)
    errors = sum(1 for r in results if isinstance(r, BaseException))
    damaged = sum(1 for r in results if not isinstance(r, BaseException) and (r[2] != expected or len(r[3]) != 1))
    return errors, damaged


# --- Tracing: off, sampled at 0.1, always on -----------------------------------------

# Records are built (and spans emitted) as in production, then dropped instead of published and
# journaled: the figures are the web process's own, undisturbed by a broker or the disk.
WEB_PROCESS_ONLY = {"TELEMETRY_PUBLISHER": "bench.null_publisher.DiscardPublisher", "GATEWAY_JOURNAL_ENABLED": "false"}
TRACING_CONFIGS = (
    ("tracing off", {}),
    ("probability 0.1", {"OTEL_TRACES_SAMPLER": "probability", "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
    ("always on", {"OTEL_TRACES_SAMPLER": "always"}),
)


def tracing_comparison(*, rounds: int, duration: int) -> None:
    receiver_port = free_port()
    receiver = subprocess.Popen(
        [PYTHON, "-m", "tests.otlp_receiver", "--port", str(receiver_port), "--discard"], cwd=ROOT
    )
    stacks = []
    try:
        wait_for_port(receiver_port)
        endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver_port}"}
        for name, env in TRACING_CONFIGS:
            stack = Stack(telemetry=True, extra_env=WEB_PROCESS_ONLY | ((endpoint | env) if env else {}))
            stacks.append((name, stack))
            stack.start()
        for _, stack in stacks:
            wrk(stack.gateway_url, stack.key, connections=8, duration=3)  # warm-up
        figures: dict[str, list[float]] = {name: [] for name, _ in stacks}
        cpu: dict[str, list[float]] = {name: [] for name, _ in stacks}
        for round_number in range(rounds):
            # Each round starts with another configuration, so none always runs first or last.
            shift = round_number % len(stacks)
            for name, stack in stacks[shift:] + stacks[:shift]:
                before = stack.cpu_seconds()
                result = wrk(stack.gateway_url, stack.key, connections=32, duration=duration)
                if result["NON2XX"] or result["SOCKET_ERRORS"]:
                    raise SystemExit(
                        f"{name}: {result['NON2XX']:.0f} non-2xx, {result['SOCKET_ERRORS']:.0f} socket errors"
                    )
                figures[name].append(result["RPS"])
                # Spans still queued for export are paid for in this configuration's next round.
                cpu[name].append((stack.cpu_seconds() - before) / result["REQUESTS"] * 1e6)
    finally:
        for _, stack in stacks:
            stack.stop()
        receiver.terminate()
        receiver.wait(timeout=15)

    baseline = statistics.median(figures["tracing off"])
    cpu_baseline = statistics.median(cpu["tracing off"])
    print(f"\nThroughput at concurrency 32, {rounds} interleaved rounds of {duration} s")
    print(
        f"{'configuration':18} {'req/s, each round':>36} {'median':>9} {'vs off':>8} {'CPU us/req':>11} {'vs off':>8}"
    )
    for name, values in figures.items():
        median = statistics.median(values)
        rounds_text = " ".join(f"{value:.0f}" for value in values)
        cost = statistics.median(cpu[name])
        print(
            f"{name:18} {rounds_text:>36} {median:9.1f} {(median - baseline) / baseline * 100:+7.1f}%"
            f" {cost:11.0f} {(cost - cpu_baseline) / cpu_baseline * 100:+7.1f}%"
        )
    print("CPU us/req: the gateway process's CPU time (all its threads, span export included) per request.")


def paired_changes(base: list[float], other: list[float]) -> list[float]:
    """Each round's change from `base` to `other` in per cent. The two runs of a round follow each
    other, so a machine whose speed drifts between rounds moves both; their median is steadier
    than the change between two medians."""
    return [(b / a - 1) * 100 for a, b in zip(base, other, strict=True)]


def paired_line(label: str, changes: list[float]) -> str:
    rounds = " ".join(f"{change:+.1f}" for change in changes)
    return f"{label:46} {statistics.median(changes):+10.1f}%  [{rounds}]"


BUDGET_AND_LIMITS = (
    "--budget-usd",
    "1000000",
    "--budget-period",
    "month",
    "--rpm",
    "100000000",
    "--tpm",
    "10000000000",
)


def budget_comparison(args) -> None:
    """The same load on a gateway whose key has a budget and two limits, and on one without, interleaved."""
    if not os.environ.get("REDIS_URL"):
        raise SystemExit("--budget needs REDIS_URL: budgets and limits are counted in Redis")
    plain = Stack(telemetry=True).start()
    limited = Stack(telemetry=True, key_options=BUDGET_AND_LIMITS).start()
    runs: dict[str, dict[str, list[float]]] = {"plain": {}, "limited": {}}
    try:
        for stack in (plain, limited):
            wrk(stack.gateway_url, stack.key, connections=8, duration=3)  # warm-up
        for round_number in range(args.rounds):
            # Which gateway goes first alternates, so that neither always runs on a machine the other warmed.
            order = (("plain", plain), ("limited", limited))[:: -1 if round_number % 2 else 1]
            for name, stack in order:
                c1 = wrk(stack.gateway_url, stack.key, connections=1, duration=args.duration)
                runs[name].setdefault("p50", []).append(c1["P50_US"] / 1000)
                runs[name].setdefault("non2xx", []).append(c1["NON2XX"])
            for name, stack in order:
                before = stack.cpu_seconds()
                c32 = wrk(stack.gateway_url, stack.key, connections=32, duration=args.duration)
                runs[name].setdefault("cpu", []).append((stack.cpu_seconds() - before) / c32["REQUESTS"] * 1e6)
                runs[name].setdefault("rps", []).append(c32["RPS"])
                runs[name].setdefault("non2xx", []).append(c32["NON2XX"] + c32["SOCKET_ERRORS"])
    finally:
        plain.stop()
        limited.stop()
    p50 = {name: statistics.median(run["p50"]) for name, run in runs.items()}
    rps = {name: statistics.median(run["rps"]) for name, run in runs.items()}
    print(f"\n{args.rounds} interleaved rounds of {args.duration} s; medians")
    print(f"{'figure':46} {'no limits':>10} {'limited':>10} {'change':>10}")
    added = p50["limited"] - p50["plain"]
    print(
        f"{'Non-streaming p50 at concurrency 1 (ms)':46} {p50['plain']:10.3f} {p50['limited']:10.3f} {added:+10.3f} ms"
    )
    change = (rps["limited"] - rps["plain"]) / rps["plain"] * 100
    print(f"{'Throughput at concurrency 32 (req/s)':46} {rps['plain']:10.1f} {rps['limited']:10.1f} {change:+9.1f}%")
    # The gateway's one worker is the bottleneck at concurrency 32: its CPU per request sets the throughput.
    cpu = {name: statistics.median(run["cpu"]) for name, run in runs.items()}
    added_cpu = cpu["limited"] - cpu["plain"]
    label = "Gateway CPU per request at c32 (us)"
    print(f"{label:46} {cpu['plain']:10.0f} {cpu['limited']:10.0f} {added_cpu:+10.0f} us")
    for name in ("plain", "limited"):
        print(
            f"{name + ' rounds: p50 ms / req/s':46} "
            + "  ".join(f"{p:.3f}/{r:.0f}" for p, r in zip(runs[name]["p50"], runs[name]["rps"], strict=True))
        )
    print(
        paired_line(
            "Throughput change, paired by round (median)", paired_changes(runs["plain"]["rps"], runs["limited"]["rps"])
        )
    )
    # The c1 runs of a round follow each other too: their difference is steadier than that of the medians.
    added_p50 = [b - a for a, b in zip(runs["plain"]["p50"], runs["limited"]["p50"], strict=True)]
    rounds = " ".join(f"{change:+.3f}" for change in added_p50)
    print(f"{'Added p50, paired by round (median, ms)':46} {statistics.median(added_p50):+10.3f}   [{rounds}]")
    print(
        f"{'Errors (non-2xx, socket)':46} {sum(runs['plain']['non2xx']):10.0f} {sum(runs['limited']['non2xx']):10.0f}"
    )


def compare_group(args) -> None:
    """A two-deployment group against the single upstream route, interleaved round by round.

    With --baseline ROOT (a checkout of the code before the router), the single upstream route
    of that code runs in the same rounds.
    """
    stack = Stack(telemetry=True).start()
    baseline = Stack(telemetry=True, root=Path(args.baseline).resolve()).start() if args.baseline else None
    figures: dict[str, list[float]] = {}
    sides = [("single", stack, None), ("group", stack, GROUP_MODEL)]
    if baseline is not None:
        sides.insert(0, ("before", baseline, None))

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    try:
        stack.create_group()
        request = urllib.request.Request(
            stack.gateway_url,
            data=json.dumps(CHAT_BODY | {"model": GROUP_MODEL}).encode(),
            headers={"Authorization": f"Bearer {stack.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            check = json.loads(answer.read())
        # The upstream names the model it was sent: the group's, not the name the client asked for.
        if check.get("model") != "gpt-4o-mini":
            raise SystemExit(f"{GROUP_MODEL} was not served by its group: {check}")
        for _, side, model in sides:
            wrk(side.gateway_url, side.key, connections=8, duration=3, model=model)  # warm-up
        for _ in range(args.rounds):
            for label, side, model in sides:
                cpu_before = side.cpu_seconds()
                c32 = wrk(side.gateway_url, side.key, connections=32, duration=args.duration, model=model)
                add(f"{label} cpu", (side.cpu_seconds() - cpu_before) / c32["REQUESTS"] * 1e6)
                add(f"{label} rps", c32["RPS"])
                add(f"{label} errors", c32["NON2XX"] + c32["SOCKET_ERRORS"])
                c1 = wrk(side.gateway_url, side.key, connections=1, duration=max(args.duration // 2, 2), model=model)
                add(f"{label} p50", c1["P50_US"] / 1000)
                ttfb, whole = asyncio.run(sequential_streams(side.gateway_url, side.key, args.streams, model))
                add(f"{label} ttfb", ttfb)
                add(f"{label} whole", whole)
    finally:
        stack.stop()
        if baseline is not None:
            baseline.stop()

    rows = [
        ("Throughput at concurrency 32 (req/s)", "rps"),
        ("Gateway CPU per request at c32 (us)", "cpu"),
        ("Non-streaming p50 at concurrency 1 (ms)", "p50"),
        ("Streaming time to first byte, median (ms)", "ttfb"),
        ("Whole 21-chunk stream, median (ms)", "whole"),
        ("Errors at concurrency 32", "errors"),
    ]
    names = {"before": "single, before", "single": "single upstream", "group": "two-deployment group"}
    labels = [label for label, _, _ in sides]
    print(f"\n{args.rounds} interleaved rounds; median, then every round in order")
    for name, key in rows:
        print(f"{name}:")
        reference = statistics.median(figures[f"single {key}"])
        for label in labels:
            values = figures[f"{label} {key}"]
            middle = statistics.median(values)
            change = (
                f"{(middle - reference) / reference * 100:+6.1f}% vs single" if reference and label != "single" else ""
            )
            rounds = " ".join(f"{v:.0f}" if v >= 100 else f"{v:.2f}" for v in values)
            print(f"  {names[label]:22} {middle:9.2f}  {change:16}  [{rounds}]")
    # On a shared machine the wall-clock figures swing with other load; CPU per request barely does,
    # and one worker's throughput ceiling is its inverse.
    print("One worker's throughput ceiling, 1e6 / CPU us per request (req/s):")
    reference = statistics.median(figures["single cpu"])
    for label in labels:
        cpu = statistics.median(figures[f"{label} cpu"])
        print(f"  {names[label]:22} {1e6 / cpu:9.0f}  {(reference / cpu - 1) * 100:+6.1f}% vs single")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--streams", type=int, default=300, help="sequential streams for the TTFB figures")
    parser.add_argument("--no-telemetry-comparison", action="store_true")
    parser.add_argument("--otlp", action="store_true", help="compare tracing off, sampled at 0.1 and always on")
    parser.add_argument(
        "--budget", action="store_true", help="compare a key with a budget and two limits to one without"
    )
    parser.add_argument(
        "--two-deployment-group", action="store_true", help="compare a two-deployment group with the single upstream"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of a comparison")
    parser.add_argument("--baseline", help="with --two-deployment-group: a checkout whose single route runs alongside")
    parser.add_argument("--make-run", action="store_true", help="run the gateway and a worker as `make run` does")
    args = parser.parse_args()
    if args.otlp:
        tracing_comparison(rounds=args.rounds, duration=args.duration)
        return
    if args.budget:
        budget_comparison(args)
        return
    if args.two_deployment_group:
        compare_group(args)
        return

    if args.make_run:
        flags, _ = make_run_commands()
        like = {"multiprocess_metrics": True, "worker": True, "flags": flags, "extra_env": make_run_env()}
    else:
        like = {}
    stack = Stack(telemetry=True, **like).start()
    try:
        key = stack.key
        wrk(stack.gateway_url, key, connections=8, duration=3)  # warm-up
        direct_c1 = wrk(stack.upstream_url, key, connections=1, duration=args.duration)
        gateway_c1 = wrk(stack.gateway_url, key, connections=1, duration=args.duration)
        direct_c32 = wrk(stack.upstream_url, key, connections=32, duration=args.duration)
        if stack.worker_process is not None:
            worker_before = stack.worker_cpu_until_idle()
        gateway_before = stack.cpu_seconds()
        gateway_c32 = wrk(stack.gateway_url, key, connections=32, duration=args.duration, rss_probe=stack.rss_mb)
        gateway_cpu_us = (stack.cpu_seconds() - gateway_before) / gateway_c32["REQUESTS"] * 1e6
        if stack.worker_process is not None:
            worker_cpu_us = (stack.worker_cpu_until_idle() - worker_before) / gateway_c32["REQUESTS"] * 1e6
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
    print(f"{'Gateway CPU per request at c32 (us)':46} {'':>10} {gateway_cpu_us:10.0f}")
    if stack.worker_process is not None:
        print(f"{'Celery worker CPU per request at c32 (us)':46} {'':>10} {worker_cpu_us:10.0f}")
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
