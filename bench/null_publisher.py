"""A telemetry publisher that drops every batch: for benchmarks of the web process alone, no broker."""


class DiscardPublisher:
    def publish(self, documents: list[dict]) -> None:
        pass
