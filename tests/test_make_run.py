"""`make run` as a new user meets it: it starts, says what to do next, and stops cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import _free_port

ROOT = Path(__file__).resolve().parent.parent
# The venv running the tests: `.venv` under `make test`, as the Makefile's default.
VENV = Path(sys.prefix)
SERVICE_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "ELASTICSEARCH_URL", "ENABLE_ELASTICSEARCH")


def make_command(*targets: str, **variables: str) -> list[str]:
    """`make` on this checkout's Makefile with the test's venv, never reinstalling it."""
    assignments = [f"{name}={value}" for name, value in ({"VENV": str(VENV)} | variables).items()]
    return ["make", "--no-print-directory", "-o", f"{VENV}/.installed", *targets, *assignments]


def embedded_environment(var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a first `make run`: no service URLs, no provider keys or base URLs."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in SERVICE_VARIABLES
        and not name.endswith(("_API_KEY", "_BASE_URL"))
        and not name.startswith(("MAKE", "MFLAGS"))
    }
    return environment | {"GATEWAY_VAR_DIR": str(var_dir)} | extra


def session_processes(session: int) -> list[tuple[int, str]]:
    """Live (non-zombie) processes of a session, as (pid, command line): orphans included."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, _ppid, _group, sid = stat.rsplit(")", 1)[1].split()[:4]
        if int(sid) == session and state != "Z":
            found.append((int(entry.name), command))
    return found


class MakeRun:
    def __init__(self, var_dir: Path, **variables: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = var_dir / f"make-run-{self.port}.log"
        self.log = self.log_path.open("wb")
        environment = embedded_environment(var_dir, PORT=str(self.port), **variables)
        self.process = subprocess.Popen(
            make_command("run"),
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_ready(self, timeout: float = 120) -> None:
        """Until /healthz answers, the worker is ready and the start-up summary is out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"make run exited early:\n{self.output[-3000:]}"
            try:
                healthy = httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                healthy = False
            output = self.output
            if healthy and " ready." in output and "make key" in output:
                return
            time.sleep(0.3)
        raise AssertionError(f"make run was not ready within {timeout} s:\n{self.output[-3000:]}")

    def processes(self) -> list[tuple[int, str]]:
        return session_processes(self.process.pid)

    def kill_leftovers(self) -> None:
        for pid, _ in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self.log.close()


def _stop_and_check(run: MakeRun, send, while_running=None) -> None:
    try:
        run.wait_until_ready()
        running = run.processes()
        commands = " ".join(command for _, command in running)
        assert "uvicorn" in commands and "celery" in commands, running
        if while_running is not None:
            while_running(running)
        send()
        deadline = time.monotonic() + 15
        while run.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert run.processes() == [], "still running 15 s after the stop signal"
        run.process.wait(timeout=5)
        output = run.output
        assert "RecursionError" not in output
        assert "Segmentation fault" not in output
        assert output.count("Warm shutdown") <= 2
        assert len(output) < 100_000, f"{len(output)} characters of output"
    finally:
        run.kill_leftovers()


def _environment_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode(errors="replace").split("=", 1) for pair in pairs if b"=" in pair)


def _web_hands_off_once_a_second(running) -> None:
    # Bigger export batches for the worker on the same machine (see RUN_TELEMETRY_FLUSH_INTERVAL).
    web = [pid for pid, command in running if "uvicorn" in command]
    assert web and all(_environment_of(pid).get("TELEMETRY_FLUSH_INTERVAL") == "1" for pid in web), web


def test_sigterm_stops_web_and_worker_and_the_first_run_says_what_to_do_next(tmp_path):
    run = MakeRun(tmp_path, DEMO_LOG_COUNT="300")
    _stop_and_check(run, lambda: os.kill(run.process.pid, signal.SIGTERM), _web_hands_off_once_a_second)
    output = run.output
    for line in (
        f"{run.url}/v1",
        f"{run.url}/dashboards/",
        f"{run.url}/admin/",
        "make superuser",
        "make key ORG=",
        "demo-acme",
        "remove_demo_data",
    ):
        assert line in output, line
    # No key anywhere: the default provider's is called out, the others are listed on one line.
    assert "WARNING openai, the default provider, has no key" in output
    unconfigured = next(line for line in output.splitlines() if line.startswith("Providers not configured"))
    assert "anthropic" in unconfigured and "openai" not in unconfigured
    assert "WARNING anthropic" not in output
    with sqlite3.connect(tmp_path / "tollgate.sqlite3") as database:
        orgs = dict(database.execute("SELECT slug, name FROM proxy_organisation"))
        (logs,) = database.execute("SELECT COUNT(*) FROM ai_gateway_request_logs").fetchone()
        (journal_mode,) = database.execute("PRAGMA journal_mode").fetchone()
    # The web process reads while the worker writes, neither waiting for the other.
    assert journal_mode == "wal"
    assert orgs and all(slug.startswith("demo-") and name.startswith("Demo: ") for slug, name in orgs.items())
    assert logs == 300


def test_ctrl_c_stops_web_and_worker(tmp_path):
    """A terminal's Ctrl-C: SIGINT to the foreground process group (make and what it started in it)."""
    run = MakeRun(tmp_path, DEMO_LOG_COUNT="0")
    _stop_and_check(run, lambda: os.killpg(run.process.pid, signal.SIGINT))
    assert "No demo logs requested" in run.output
    assert "demo-acme" not in run.output


def test_demo_data_is_never_seeded_into_a_database_named_by_database_url(tmp_path):
    database = tmp_path / "mine.sqlite3"
    environment = embedded_environment(tmp_path, DATABASE_URL=f"sqlite:///{database}")
    command = [sys.executable, "manage.py"]
    subprocess.run([*command, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=environment, check=True)
    seeded = subprocess.run(
        [*command, "seed_demo_logs", "--count", "50", "--days", "1", "--if-empty", "--embedded-only"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "DATABASE_URL" in seeded.stdout
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT COUNT(*) FROM proxy_organisation").fetchone() == (0,)
        assert connection.execute("SELECT COUNT(*) FROM ai_gateway_request_logs").fetchone() == (0,)


def test_when_one_process_exits_the_launcher_stops_the_other_and_fails(tmp_path):
    sleeper = f"{sys.executable} -c 'import time; time.sleep(120)'"
    crasher = f"{sys.executable} -c 'import time; time.sleep(0.5); raise SystemExit(3)'"
    command = [sys.executable, "-m", "gateway_project.launcher", "--url", "http://127.0.0.1:9"]
    launcher = subprocess.Popen(
        [*command, "--web", sleeper, "--worker", crasher],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = launcher.communicate(timeout=30)
        assert launcher.returncode == 3
        assert "worker exited with code 3" in stderr
        assert session_processes(launcher.pid) == []
    finally:
        for pid, _ in session_processes(launcher.pid):
            os.kill(pid, signal.SIGKILL)
