"""A plain text progress bar for management commands (no dependency, redraws in place on a TTY)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, label: str, *, stream=None, width: int = 30):
        self.label = label
        # A management command's OutputWrapper appends a newline to every write; draw on its stream.
        self.stream = getattr(stream, "_out", stream) or sys.stderr
        self.width = width
        self.started = time.monotonic()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_line = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        finished = total and done >= total
        # Off a terminal (CI logs) a line every few seconds is enough.
        if not finished and now - self._last_line < (0.2 if self.tty else 5.0) and done:
            return
        self._last_line = now
        fraction = done / total if total else 1.0
        filled = int(self.width * fraction)
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        line = (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{done:,}/{total:,} {fraction:6.1%} {elapsed:6.1f}s {rate:,.1f}/s"
        )
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        if finished and self.tty:
            self.stream.write("\n")
        self.stream.flush()
