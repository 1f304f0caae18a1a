"""A telemetry publisher for gateway subprocesses under test: documents as JSON lines, one file per process."""

import os
from pathlib import Path

import orjson


class FilePublisher:
    def publish(self, documents: list[dict]) -> None:
        path = Path(os.environ["TEST_PUBLISHED_DIR"]) / f"published-{os.getpid()}.jsonl"
        with path.open("ab") as file:
            file.writelines(orjson.dumps(document) + b"\n" for document in documents)


def read_published(directory: Path) -> dict[str, list[dict]]:
    """Documents by the file (process) that published them."""
    return {
        path.name: [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
        for path in sorted(directory.glob("published-*.jsonl"))
    }
