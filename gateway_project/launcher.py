"""`make run`'s supervisor: the web server and the Celery worker, started and stopped together.

    python -m gateway_project.launcher --url http://127.0.0.1:8000 --web "uvicorn …" --worker "celery …"

Each child runs in a process group of its own, so a terminal's Ctrl-C reaches this process
alone and each child hears of it once, as one SIGTERM (a graceful stop for uvicorn and Celery
both) instead of the SIGINTs, and SIGINTs again, of a shared group. A child still running after
the grace period is killed with its whole group. When a child exits on its own, the other one
is stopped too. Once the web server answers at `--url`, the start-up summary is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

POLL_SECONDS = 0.1


class Launcher:
    def __init__(self, commands: dict[str, str], *, grace: float):
        self.commands = commands
        self.grace = grace
        self.children: dict[str, subprocess.Popen] = {}
        # Counted by the signal handler and only read elsewhere: no lock a handler could deadlock on.
        self.signals_received = 0

    @property
    def stopping(self) -> bool:
        return self.signals_received > 0

    def _on_signal(self, signum, frame) -> None:
        self.signals_received += 1

    def start(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        for name, command in self.commands.items():
            self.children[name] = subprocess.Popen(shlex.split(command), stdin=subprocess.DEVNULL, process_group=0)

    def wait(self) -> int:
        """Until a stop signal or a child's exit; then stop every child. Returns the exit code."""
        exited = None
        while exited is None and not self.stopping:
            time.sleep(POLL_SECONDS)
            exited = next((name for name, child in self.children.items() if child.poll() is not None), None)
        if exited:
            code = self.children[exited].returncode
            print(f"launcher: {exited} exited with code {code}; stopping the others", file=sys.stderr, flush=True)
        self.stop()
        if exited is None:
            return 0
        code = self.children[exited].returncode
        return code if code > 0 else 1

    def stop(self) -> None:
        for child in self.children.values():
            _signal_process(child, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        # A second Ctrl-C means now.
        while time.monotonic() < deadline and self.signals_received < 2:
            if all(child.poll() is not None for child in self.children.values()):
                break
            time.sleep(POLL_SECONDS)
        for name, child in self.children.items():
            if child.poll() is None:
                print(f"launcher: {name} did not stop within {self.grace:g} s; killing it", file=sys.stderr, flush=True)
            # Whatever the leader left behind in its group (a pool process, say) goes with it.
            _signal_group(child, signal.SIGKILL)
            child.wait()


def _signal_process(child: subprocess.Popen, signum: int) -> None:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)


def _wait_for_web(url: str, launcher: Launcher) -> bool:
    while not launcher.stopping:
        time.sleep(0.5)
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            continue
    return False


def _announce_when_up(url: str, launcher: Launcher) -> None:
    if not _wait_for_web(url, launcher):
        return
    import django

    django.setup()
    from django.db import connections

    from gateway_project.welcome import welcome_lines

    try:
        print("\n".join(welcome_lines(url=url)), flush=True)
    finally:
        connections.close_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--web", required=True, help="the web server's command line")
    parser.add_argument("--worker", required=True, help="the Celery worker's command line")
    parser.add_argument("--url", required=True, help="where the web server answers, for the start-up summary")
    parser.add_argument("--grace", type=float, default=15.0, help="seconds a child may take to stop")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    launcher = Launcher({"web": args.web, "worker": args.worker}, grace=args.grace)
    launcher.start()
    threading.Thread(target=_announce_when_up, args=(args.url, launcher), daemon=True).start()
    return launcher.wait()


if __name__ == "__main__":
    sys.exit(main())
