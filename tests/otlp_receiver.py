"""A local OTLP/HTTP trace receiver: POST /v1/traces with protobuf bodies, as a collector accepts them.

Tests start it on a random port in a background thread and read the spans it decoded::

    receiver = OtlpReceiver.start()
    ...  # OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url
    span = receiver.wait_for_span(lambda s: s.name == "provider.generate")
    receiver.stop()

Benchmarks run it in the foreground as a sink that decodes nothing and keeps nothing:
``python -m tests.otlp_receiver --port 4318 --discard``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()


@dataclass
class ReceivedSpan:
    """One decoded span, its ids as lower-case hex and its attributes as plain values."""

    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    status_code: int
    attributes: dict
    resource: dict = field(repr=False)


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in any_value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


def _attributes(key_values) -> dict:
    return {item.key: _value(item.value) for item in key_values}


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=span.kind,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        status_code=span.status.code,
                        attributes=_attributes(span.attributes),
                        resource=resource,
                    )
                )
    return spans


class OtlpReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, discard: bool = False):
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.discard = discard
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path != "/v1/traces":
                    self._answer(404, b"")
                    return
                if not receiver.discard:
                    encoding = (self.headers.get("content-encoding") or "").lower()
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    if self.headers.get("content-type") != "application/x-protobuf":
                        self._answer(415, b"")
                        return
                    spans = decode(body)
                    with receiver._lock:
                        receiver.spans.extend(spans)
                with receiver._lock:
                    receiver.requests += 1
                self._answer(200, _EMPTY_RESPONSE)

            def _answer(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @classmethod
    def start(cls, host: str = "127.0.0.1", port: int = 0, *, discard: bool = False) -> OtlpReceiver:
        receiver = cls(host, port, discard=discard)
        receiver.thread.start()
        return receiver

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        with self._lock:
            self.spans.clear()
            self.requests = 0

    def spans_of(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def wait_for_spans(self, trace_id: str, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans_of(trace_id)
            if len(spans) >= count:
                return spans
            time.sleep(0.02)
        raise AssertionError(f"expected {count} spans of trace {trace_id}, got {len(self.spans_of(trace_id))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--discard", action="store_true", help="accept every export without decoding it")
    args = parser.parse_args()
    receiver = OtlpReceiver(args.host, args.port, discard=args.discard)
    with contextlib.suppress(KeyboardInterrupt):
        receiver.server.serve_forever()


if __name__ == "__main__":
    main()
