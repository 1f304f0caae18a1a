"""The journal's files: records survive the trip through a segment, and a live process's segments are its own."""

from __future__ import annotations

import mmap
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

from telemetry.handoff import HandoffPipeline
from telemetry.journal import _HEADER, Journal, Segment, decode_segment, encode_record
from tests.telemetry.conftest import ROOT, plain_record, streaming_record

WRITER = textwrap.dedent(
    """
    import sys
    import django

    django.setup()
    from pathlib import Path
    from telemetry.journal import Journal
    from telemetry.record import RequestRecord

    journal = Journal(Path(sys.argv[1]), max_bytes=1 << 20)
    for n in range(3):
        journal.append(RequestRecord(path="/v1/chat/completions", method="POST", id=f"record-{n}"))
    print("written", flush=True)
    sys.stdin.read()  # alive until told otherwise
    """
)


def test_a_segment_gives_back_the_records_written_to_it(tmp_path):
    journal = Journal(tmp_path, max_bytes=1 << 20)
    plain, streamed = plain_record(), streaming_record()
    streamed.response_body = bytes(range(256))  # any bytes at all, not only UTF-8
    raw = plain_record()
    raw.request_json = raw.response_json = None  # bodies the proxy did not parse: journaled as they are
    raw.response_body = b'{"id": "chatcmpl-1"}'
    for record in (plain, streamed, raw):
        journal.append(record)

    [segment] = journal.seal()

    assert segment.records == [plain, streamed, raw]
    read = journal.read(Segment(path=segment.path, size=segment.size))
    assert [record.to_document() for record in read] == [record.to_document() for record in (plain, streamed, raw)]
    assert read[2] == raw
    assert journal.seal() == []


def test_a_parsed_body_is_journaled_once(tmp_path):
    record = plain_record()
    record.response_body = orjson.dumps(record.response_json)
    line = encode_record(record)
    assert record.request_body not in line and b"chatcmpl-1" in line
    assert line.count(b"capital of France") == 1
    [replayed], _ = decode_segment(_HEADER + line)
    assert replayed.request_size == len(record.request_body)
    assert replayed.to_document() == record.to_document()


def test_segments_of_a_live_process_are_left_alone_and_a_dead_ones_are_taken_over(tmp_path):
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={"DJANGO_SETTINGS_MODULE": "gateway_project.settings", "PYTHONPATH": str(ROOT)},
    )
    try:
        assert writer.stdout.readline().strip() == b"written"
        other = Journal(tmp_path, max_bytes=1 << 20)
        assert other.take_over_dead() == []

        writer.kill()
        writer.wait(timeout=10)
        segments = other.take_over_dead()
        assert [record.id for segment in segments for record in other.read(segment)] == [
            "record-0",
            "record-1",
            "record-2",
        ]
        # Taken over once: another look, by this process or a third, finds nothing more.
        assert other.take_over_dead() == []
        assert Journal(tmp_path, max_bytes=1 << 20).take_over_dead() == []
        for segment in segments:
            other.delete(segment)
        assert list(tmp_path.iterdir()) == []
    finally:
        if writer.poll() is None:
            writer.kill()


def _holds(journal: Journal, path: Path) -> list[dict]:
    return [record.to_document() for record in journal.read(Segment(path=path, size=path.stat().st_size))]


def test_the_next_segment_is_made_ready_at_a_seal_and_removed_at_a_graceful_stop(tmp_path):
    journal = Journal(tmp_path, max_bytes=1 << 20)
    journal.append(plain_record())
    [first] = journal.seal()
    journal.delete(first)
    # Allocated and filled with zero bytes by the hand-off thread: the event loop only copies into it.
    ready = journal._spare.path
    assert ready.read_bytes().rstrip(b"\0").count(b"\n") == 1  # its header, no record yet
    # The first, taken by the broker, is kept for reuse and holds nothing any more.
    assert sorted(tmp_path.glob("*/*.seg")) == sorted([first.path, ready])
    assert _holds(journal, first.path) == []

    record = plain_record()
    journal.append(record)
    [second] = journal.seal()

    assert second.path == ready
    assert [replayed.to_document() for replayed in journal.read(second)] == [record.to_document()]
    journal.delete(second)
    journal.close()
    assert [path.name for path in tmp_path.glob("*/*")] == ["lock"]
    assert journal.size == 0


def test_a_segment_the_broker_takes_is_reused_and_gives_back_only_its_new_records(tmp_path):
    journal = Journal(tmp_path, max_bytes=1 << 20)
    paths = []
    for _ in range(12):
        records = [plain_record() for _ in range(3)]
        for record in records:
            journal.append(record)
        [segment] = journal.seal()
        # What a process killed now would leave: this interval's records, none of an earlier one.
        assert _holds(journal, segment.path) == [record.to_document() for record in records]
        journal.delete(segment)
        paths.append(segment.path)
    # A few files written again and again, not a new one every flush interval.
    assert len(set(paths)) <= 2
    assert len(list(tmp_path.glob("*/*.seg"))) <= 2
    assert journal.size == len(_HEADER)  # the prepared segment's header


def test_a_segment_made_larger_for_a_large_record_is_deleted_not_kept(tmp_path):
    journal = Journal(tmp_path, max_bytes=1 << 30)
    record = plain_record()
    record.request_json["messages"][0]["content"] = "x" * (2 * Journal.SEGMENT_CAPACITY)
    journal.append(record)
    [segment] = journal.seal()
    assert segment.size > Journal.SEGMENT_CAPACITY

    journal.delete(segment)

    assert not segment.path.exists()
    assert journal._emptied == []


def test_a_segment_being_emptied_when_its_process_is_killed_holds_nothing(tmp_path):
    # `_Open.empty` zeroes the first byte first: whatever else a kill left of its old lines is not read.
    stale = _HEADER + encode_record(plain_record())
    path = tmp_path / "000000000001.seg"
    path.write_bytes(b"\0" + stale[1:20] + bytes(len(stale) - 20))
    journal = Journal(tmp_path, max_bytes=1 << 20)

    assert _holds(journal, path) == []


class TakingPublisher:
    def publish(self, documents: list[dict]) -> None:
        pass


class RefusingPublisher:
    def publish(self, documents: list[dict]) -> None:
        raise ConnectionError("the broker is down")


def _cancelled_write_bytes() -> int:
    """Bytes this process dirtied that left the page cache unwritten (a file removed before writeback)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("cancelled_write_bytes:"):
            return int(line.split()[1])
    raise AssertionError("no I/O accounting in /proc/self/io")


def _journaled_pipeline(settings, tmp_path, publisher) -> tuple[HandoffPipeline, int]:
    settings.TELEMETRY_PUBLISHER = f"{__name__}.{publisher.__name__}"
    settings.GATEWAY_JOURNAL_DIR = tmp_path
    pipeline = HandoffPipeline()
    written = 0
    for _ in range(40):
        record = plain_record()
        record.request_json["messages"][0]["content"] += " padding" * 1_000  # about 8 KB a line
        pipeline.journal.append(record)
        written += len(encode_record(record))
    return pipeline, written


def test_a_segment_the_broker_takes_is_emptied_in_the_page_cache_not_fsynced(settings, tmp_path):
    pipeline, _ = _journaled_pipeline(settings, tmp_path, TakingPublisher)
    [path] = tmp_path.glob("*/0*.seg")

    assert pipeline.flush_sync() == 40

    # Kept, mapped and empty, for the next records; its pages are left to the kernel's writeback.
    assert pipeline.journal._emptied and pipeline.journal._emptied[0].path == path
    assert _holds(pipeline.journal, path) == []
    assert sorted(tmp_path.glob("*/0*.seg")) == sorted([path, pipeline.journal._spare.path])


def test_a_segment_the_broker_refuses_is_on_disk_after_the_flush(settings, tmp_path):
    pipeline, written = _journaled_pipeline(settings, tmp_path, RefusingPublisher)

    assert pipeline.flush_sync() == 0

    [segment] = pipeline._shipping
    assert segment.size > written
    before = _cancelled_write_bytes()
    segment.path.unlink()
    # Its pages were clean: fsynced by the flush, not left to the kernel's writeback half a minute later.
    assert _cancelled_write_bytes() - before < mmap.PAGESIZE
