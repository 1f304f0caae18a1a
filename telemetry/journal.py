"""The local journal: request records on disk from the moment they are finished until the broker has them.

Borrowed from Vector's disk buffer and Fluent Bit's filesystem storage. Each process appends
every finished record, one orjson line, to the segment it is writing in its own directory,
`<GATEWAY_JOURNAL_DIR>/<pid>-<token>/<seq>.seg`. The segment is a shared memory mapping of the
file, so the append is a memory copy with no syscall and no fsync, and the copied bytes are the
kernel's at once: a killed process loses nothing it had answered for. The hand-off thread seals
the segments every flush interval and, once the broker has acknowledged the publish of a
segment's records, empties it for reuse. A segment the broker has not taken by the end of that
flush is cut to its records and fsynced then (`Journal.sync`): every record is on disk or in the
broker within about a flush interval. The segments the broker takes at once, nearly all of
them, are emptied in memory and written again: a process reuses a few files, kept mapped, rather
than creating, allocating, cutting and deleting one every flush interval, filesystem work that
cost the event loop far more than the copies themselves. The kernel writes those few files back
at its leisure (every `vm.dirty_expire_centisecs`), a few MiB per process per half minute.

A process holds an exclusive flock on its directory's lock file for as long as it lives. A
directory whose lock can be taken belongs to a process that is gone: whoever takes the lock ships
what that process left. Replayed records may have been published already; the stores skip record
ids they have, so that costs a duplicate publish, never a duplicate row.

The journal is bounded by GATEWAY_JOURNAL_MAX_BYTES: a record that would take it past the bound is
dropped, counted in `telemetry_journal_dropped_records_total` and logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import operator
import os
import secrets
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path

import orjson

from telemetry import metrics
from telemetry.record import RequestRecord

logger = logging.getLogger(__name__)

LOCK_NAME = "lock"
SUFFIX = ".seg"
_NAMES = tuple(f.name for f in fields(RequestRecord) if f.metadata.get("journaled", True))
_values_of = operator.attrgetter(*_NAMES)
# A segment names the fields once, in its first line; each record is then an array of values,
# cheaper to write than an object, and still readable by a version whose record has changed.
_HEADER = orjson.dumps({"fields": _NAMES}) + b"\n"
# The least of the next segment the hand-off thread makes ready for the event loop (see _Open).
_PREFILL_MIN = 64 * 1024
# Raw bodies and stream events are bytes, which JSON cannot hold: they go as latin-1 text, byte for byte.
_BYTES_FIELDS = frozenset(f.name for f in fields(RequestRecord) if "bytes" in str(f.type))


def _bytes_as_text(value):
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# A body the proxy parsed is journaled once, as JSON: its raw bytes, which the document never reads
# then, would double the line (and its escaping) for every prompt. Its size is kept instead.
_REQUEST_BODY, _REQUEST_SIZE, _RESPONSE_BODY = (
    _NAMES.index(name) for name in ("request_body", "request_size", "response_body")
)


def encode_record(record: RequestRecord) -> bytes:
    values = _values_of(record)
    parsed_request = record.request_json is not None and record.request_body
    parsed_response = record.response_json is not None and record.response_body
    if parsed_request or parsed_response:
        values = list(values)
        if parsed_request:
            values[_REQUEST_BODY] = ""
            if record.request_size is None:
                values[_REQUEST_SIZE] = len(record.request_body)
        if parsed_response:
            values[_RESPONSE_BODY] = ""  # empty, not None: None would say no body was sent
    return orjson.dumps(values, default=_bytes_as_text) + b"\n"


def decode_segment(data: bytes) -> tuple[list[RequestRecord], int]:
    """The records in a segment's bytes, and how many lines could not be read."""
    lines = data.splitlines()
    if not lines:
        return [], 0
    try:
        names = orjson.loads(lines[0])["fields"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return [], len(lines)
    records, unreadable = [], 0
    for line in lines[1:]:
        try:
            records.append(_decode_record(names, orjson.loads(line)))
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
            unreadable += 1
    return records, unreadable


def _decode_record(names: list[str], values: list) -> RequestRecord:
    if not isinstance(values, list) or len(values) != len(names):
        raise ValueError("not a journal record")
    data = {}
    for name, value in zip(names, values, strict=True):
        if name in _BYTES_FIELDS:
            if isinstance(value, str):
                value = value.encode("latin-1")
            elif isinstance(value, list):
                value = [item.encode("latin-1") for item in value]
        data[name] = value
    return RequestRecord(**{name: value for name, value in data.items() if name in _NAMES})


@dataclass(eq=False)
class Segment:
    """A sealed segment: its file (None when the journal is off) and, while in memory, its contents."""

    path: Path | None
    size: int
    records: list[RequestRecord] | None = None
    documents: list[dict] | None = None
    encoded: list[bytes] | None = None  # each document's JSON, as published
    owner: Path | None = field(default=None, repr=False)
    synced: bool = False  # fsynced since it was sealed or found
    # This process's own segment, still mapped until the broker takes it (then reused) or it is synced.
    written: _Open | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        held = self.documents if self.documents is not None else self.records
        return len(held) if held is not None else 0


class _Open:
    """A segment being written: a file mapped into memory, so that appending a record is a memory copy.

    The mapping is shared with the page cache: what is copied in belongs to the kernel at once and
    survives the process being killed. The file is allocated at its full capacity, and cut to what
    was written only if it must wait for the broker; a segment a killed process left ends in zero
    bytes, skipped on reading. One the broker took is emptied and written again (`empty`).

    `prefill` bytes of zeros are written ahead (the hand-off thread does, for the next segment):
    the first copy into each page of a merely allocated file faults into the filesystem, some
    microseconds per page on the event loop, where a page already in the page cache costs nothing.
    """

    __slots__ = ("fd", "map", "path", "position", "records")

    def __init__(self, path: Path, capacity: int, *, prefill: int = 0):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            # Reserved, not sparse: a full disk then fails here, with an error, rather than as a
            # SIGBUS on a later copy into an unbacked page.
            os.posix_fallocate(self.fd, 0, capacity)
            if prefill:
                os.pwrite(self.fd, bytes(min(prefill, capacity)), 0)
            self.map = mmap.mmap(self.fd, capacity)
        except OSError:
            os.close(self.fd)
            raise
        self.map[: len(_HEADER)] = _HEADER
        self.position = len(_HEADER)
        self.records: list[RequestRecord] = []

    def fits(self, size: int) -> bool:
        return self.position + size <= len(self.map)

    def write(self, line: bytes) -> None:
        end = self.position + len(line)
        self.map[self.position : end] = line
        self.position = end

    def close(self) -> None:
        """Cut the file to what was written (a segment the broker has not taken); `Journal.sync` fsyncs it."""
        try:
            self.map.close()
            os.ftruncate(self.fd, self.position)
        finally:
            os.close(self.fd)

    def empty(self) -> None:
        """Make the segment hold nothing again, for reuse: its records are in the broker.

        Its first byte goes first: a segment that starts with a zero byte holds nothing
        (`Journal.read`), so a process killed while this runs leaves nothing to replay.
        """
        self.map[:1] = b"\0"
        self.map[1 : self.position] = bytes(self.position - 1)
        self.map[: len(_HEADER)] = _HEADER
        self.position = len(_HEADER)
        self.records = []

    def discard(self) -> None:
        """Remove a segment nothing was written to."""
        try:
            self.map.close()
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)


class Journal:
    """One process's journal directory, and the directories of dead processes it has taken over.

    `append` runs on the event loop; everything else on the hand-off thread.
    """

    SEGMENT_CAPACITY = 1024 * 1024  # a segment lasts a flush interval; a larger record gets a larger one
    # Emptied segments kept for reuse: one is written while one is shipped and one waits, and a burst
    # that fills several in one interval finds them too.
    REUSED_SEGMENTS = 4

    def __init__(self, root: Path | None, *, max_bytes: int):
        self.root = root
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._directory: Path | None = None
        self._open: _Open | None = None
        self._spare: _Open | None = None  # the next segment, made ready by the hand-off thread
        self._full: list[_Open] = []  # filled up before the hand-off thread could seal them
        self._emptied: list[_Open] = []  # taken by the broker and emptied, for `_prepare_spare` to reuse
        self._memory_only: list[RequestRecord] = []
        self._seq = 0
        self._pending = 0
        self._bytes = 0
        self._dropped = 0
        self._taken_over: dict[Path, tuple[int, int]] = {}  # directory -> (lock fd, segments left)
        self._held_locks: list[int] = []

    @property
    def enabled(self) -> bool:
        return self.root is not None

    @property
    def pending(self) -> int:
        """Records appended since the last seal."""
        return self._pending

    @property
    def size(self) -> int:
        """Bytes written to disk: segments being written, sealed ones not yet shipped and those taken over."""
        return self._bytes

    # --- The hot path -----------------------------------------------------------

    def append(self, record: RequestRecord) -> None:
        """Copy the record into the segment being written (no syscall, no fsync) and hold it for the next seal."""
        if self.root is None:
            self._memory_only.append(record)
            self._pending += 1
            return
        try:
            line = encode_record(record)
        except TypeError:
            logger.exception("telemetry: request record %s cannot be journaled; kept in memory only", record.id)
            line = None
        with self._lock:
            self._pending += 1
            if line is None:
                self._memory_only.append(record)
                return
            if self._bytes + len(line) > self.max_bytes:
                self._pending -= 1
                self._dropped += 1
                metrics.TELEMETRY_JOURNAL_DROPPED.labels("journal_full").inc()
                return
            try:
                segment = self._segment_for(len(line))
            except OSError:
                logger.exception("telemetry: cannot write the journal; record %s kept in memory only", record.id)
                self._memory_only.append(record)
                return
            segment.write(line)
            segment.records.append(record)
            self._bytes += len(line)

    def _segment_for(self, size: int) -> _Open:
        segment = self._open
        if segment is not None and segment.fits(size):
            return segment
        if segment is not None:
            self._full.append(segment)
        spare = self._spare
        if spare is not None and spare.fits(size):
            self._open, self._spare = spare, None
            return spare
        if self._directory is None:
            self._directory = self._make_directory()
        self._seq += 1
        path = self._directory / f"{self._seq:012d}{SUFFIX}"
        self._open = segment = _Open(path, max(self.SEGMENT_CAPACITY, size + len(_HEADER)))
        self._bytes += segment.position
        return segment

    def _make_directory(self) -> Path:
        """This process's directory, locked before it gets its name, so no one takes it for a dead one's."""
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        staging = self.root / f".new-{name}"
        staging.mkdir()
        fd = os.open(staging / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._held_locks.append(fd)
        directory = self.root / name
        staging.rename(directory)
        return directory

    # --- The hand-off thread ------------------------------------------------------

    def seal(self) -> list[Segment]:
        """Close the segments written since the last seal and return them with their records."""
        with self._lock:
            if not self._pending:
                return []
            written = [*self._full, *([self._open] if self._open is not None else [])]
            memory_only, self._memory_only = self._memory_only, []
            self._full, self._open, self._pending = [], None, 0
        # Left mapped: the broker most often takes them within this flush, and they are then reused.
        sealed = [
            Segment(
                path=segment.path,
                size=segment.position,
                records=segment.records,
                owner=self._directory,
                written=segment,
            )
            for segment in written
        ]
        if memory_only:
            sealed.append(Segment(path=None, size=0, records=memory_only))
        if written:
            # Twice what this interval wrote: room for a rise in traffic, without zeroing a whole
            # segment for a few records.
            self._prepare_spare(prefill=2 * sum(segment.position for segment in written))
        return sealed

    def _prepare_spare(self, *, prefill: int) -> None:
        """Allocate and prefill the segment the event loop will write next, here rather than there."""
        with self._lock:
            if self._spare is not None or self._directory is None or self._bytes + len(_HEADER) > self.max_bytes:
                return
            # Counted before a new file exists, so that appends meanwhile see the bound with it.
            self._bytes += len(_HEADER)
            if self._emptied:  # already allocated, in the page cache and mapped: nothing to prepare
                self._spare = self._emptied.pop()
                return
            self._seq += 1
            path = self._directory / f"{self._seq:012d}{SUFFIX}"
        try:
            spare = _Open(path, self.SEGMENT_CAPACITY, prefill=max(prefill, _PREFILL_MIN))
        except OSError:
            with self._lock:
                self._bytes -= len(_HEADER)
            # The event loop makes its own segment then, and reports what fails there.
            logger.warning("telemetry: cannot prepare journal segment %s", path, exc_info=True)
            return
        with self._lock:
            self._spare = spare

    def close(self) -> None:
        """At a graceful stop, after the last seal: remove the prepared and emptied segments, which hold nothing."""
        with self._lock:
            spare, self._spare = self._spare, None
            if spare is not None:
                self._bytes -= spare.position
            unused, self._emptied = [*([spare] if spare is not None else []), *self._emptied], []
        for segment in unused:
            try:
                segment.discard()
            except OSError:
                logger.warning("telemetry: cannot remove journal segment %s", segment.path, exc_info=True)

    def report_dropped(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            logger.error(
                "telemetry: journal full (GATEWAY_JOURNAL_MAX_BYTES=%d), dropped %d request records",
                self.max_bytes,
                dropped,
            )

    def take_over_dead(self) -> list[Segment]:
        """Segments left by processes that are gone (their directory's lock is free), oldest first."""
        if self.root is None or not self.root.is_dir():
            return []
        segments: list[Segment] = []
        for directory in sorted(self.root.iterdir()):
            if directory.name.startswith(".") or directory == self._directory or directory in self._taken_over:
                continue
            found = self._take_over(directory)
            segments.extend(found)
        return segments

    def _take_over(self, directory: Path) -> list[Segment]:
        try:
            fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return []  # removed by whoever shipped it, or not a journal directory
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return []  # its process is alive
        paths = sorted(directory.glob(f"*{SUFFIX}"), key=lambda path: path.name)
        segments = []
        for path in paths:
            size = path.stat().st_size
            segments.append(Segment(path=path, size=size, owner=directory))
        with self._lock:
            self._bytes += sum(segment.size for segment in segments)
        self._taken_over[directory] = (fd, len(segments))
        if segments:
            logger.warning(
                "telemetry: shipping %d journal segments left by a stopped process (%s)", len(segments), directory.name
            )
        else:
            self._release(directory)
        return segments

    def read(self, segment: Segment) -> list[RequestRecord]:
        """The records of a segment on disk; lines a crash left unreadable are counted and skipped."""
        try:
            data = segment.path.read_bytes()
        except FileNotFoundError:
            logger.warning("telemetry: journal segment %s is gone", segment.path)
            return []
        if data[:1] == b"\0":
            return []  # emptied for reuse (see _Open.empty)
        records, unreadable = decode_segment(data.rstrip(b"\0"))
        if unreadable:
            metrics.TELEMETRY_JOURNAL_DROPPED.labels("unreadable").inc(unreadable)
            logger.error("telemetry: %d unreadable records skipped in journal segment %s", unreadable, segment.path)
        return records

    def sync(self, segment: Segment) -> None:
        """Put a sealed segment the broker has not taken on disk, for a machine that stops before it does."""
        if segment.path is None or segment.synced:
            return
        written, segment.written = segment.written, None
        if written is not None:  # it may wait long: cut to its records, and no longer held open
            try:
                written.close()
            except OSError:
                logger.exception("telemetry: cannot close journal segment %s", segment.path)
        try:
            fd = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return
        except OSError:
            logger.warning("telemetry: cannot fsync journal segment %s", segment.path, exc_info=True)
            return
        segment.synced = True

    def delete(self, segment: Segment) -> None:
        """The broker has the segment's records: remove it (and its directory, if it was a dead process's)."""
        if segment.path is None:
            return
        written, segment.written = segment.written, None
        if written is None or not self._reuse(written):
            with contextlib.suppress(FileNotFoundError):
                segment.path.unlink()
        with self._lock:
            self._bytes -= segment.size
        if segment.owner in self._taken_over:
            fd, left = self._taken_over[segment.owner]
            self._taken_over[segment.owner] = (fd, left - 1)
            if left - 1 <= 0:
                self._release(segment.owner)

    def _reuse(self, written: _Open) -> bool:
        """Empty a segment the broker has taken and keep it for reuse; False (closed) when enough are kept."""
        with self._lock:
            # One made larger for a large record is not kept: the few kept files stay a few MiB.
            keep = len(self._emptied) < self.REUSED_SEGMENTS and len(written.map) == self.SEGMENT_CAPACITY
        try:
            if keep:
                written.empty()
                with self._lock:
                    self._emptied.append(written)
                return True
        except (OSError, ValueError):
            logger.warning("telemetry: cannot empty journal segment %s", written.path, exc_info=True)
        try:
            written.close()
        except OSError:
            logger.warning("telemetry: cannot close journal segment %s", written.path, exc_info=True)
        return False

    def _release(self, directory: Path) -> None:
        fd, _ = self._taken_over.pop(directory)
        try:
            if any(path.name != LOCK_NAME for path in _entries(directory)):
                return  # something unexpected in there: leave it for the next look
            with contextlib.suppress(FileNotFoundError):
                (directory / LOCK_NAME).unlink()
            with contextlib.suppress(OSError):
                directory.rmdir()
        finally:
            os.close(fd)


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:  # another process shipped and removed it first
        return []
