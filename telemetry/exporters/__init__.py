"""Exporters chosen by dotted path, built lazily, as Django builds cache backends.

`exporters.get(config)` returns the exporter for an `ExporterConfig` (see
`telemetry.selectors.exporter_configs`), building it on first use and again whenever the
config's version (its ExporterSetting row's `updated_at`) changes, so an admin edit reaches
a running worker without a restart. Adding an exporter takes a subclass of
`telemetry.exporters.base.Exporter` and an entry in TELEMETRY_EXPORTERS (or an admin row).
"""

from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import dataclass, field

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from telemetry.exporters.base import Exporter, ExportError, ExportResult

__all__ = [
    "ExportError",
    "ExportResult",
    "Exporter",
    "ExporterConfig",
    "build_exporter",
    "export_queue",
    "exporters",
]

logger = logging.getLogger(__name__)

# ExporterSetting columns handed to the backend under these option names when set.
_ROW_OPTIONS = ("url", "username", "password", "api_key")


def export_queue(exporter_name: str) -> str:
    """The Celery queue of an exporter's tasks, so that one slow store never holds up another."""
    return f"export.{exporter_name}"


@dataclass(frozen=True)
class ExporterConfig:
    name: str
    backend: str
    enabled: bool = True
    url: str = ""
    target: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    api_key: str = field(default="", repr=False)
    options: dict = field(default_factory=dict)
    batch_size: int = 500
    flush_interval: float = 1.0
    # Changes whenever the configuration does; the handler rebuilds the exporter then.
    version: str = ""
    # Why this exporter cannot be built (a secret that does not decrypt, say).
    problem: str = ""

    @property
    def queue(self) -> str:
        return export_queue(self.name)


def build_exporter(config: ExporterConfig) -> Exporter:
    if config.problem:
        raise ImproperlyConfigured(f"Exporter {config.name!r}: {config.problem}")
    try:
        backend = import_string(config.backend)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"Exporter {config.name!r}: could not import backend {config.backend!r}: {exc}"
        ) from exc
    if not (isinstance(backend, type) and issubclass(backend, Exporter)):
        raise ImproperlyConfigured(f"Exporter {config.name!r}: {config.backend!r} is not an Exporter subclass")
    parameters = inspect.signature(backend).parameters
    accepted = {name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    options = dict(config.options)
    for name in _ROW_OPTIONS:
        if value := getattr(config, name):
            options[name] = value
    if config.target:
        if backend.target_option is None:
            raise ImproperlyConfigured(f"Exporter {config.name!r}: {config.backend} takes no index or table name")
        options[backend.target_option] = config.target
    for name in ("batch_size", "flush_interval"):
        if name in accepted:
            options.setdefault(name, getattr(config, name))
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ImproperlyConfigured(
            f"Exporter {config.name!r}: unknown option(s) {', '.join(unknown)} for {config.backend}; "
            f"it takes {', '.join(sorted(accepted)) or 'none'}"
        )
    try:
        return backend(config.name, **options)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"Exporter {config.name!r}: {exc}") from exc


class ExporterHandler:
    """One built exporter per name in this process, replaced when its config changes."""

    def __init__(self):
        self._built: dict[str, tuple[str, Exporter]] = {}
        self._lock = threading.Lock()

    def get(self, config: ExporterConfig) -> Exporter:
        with self._lock:
            current = self._built.get(config.name)
            if current is not None and current[0] == config.version:
                return current[1]
            exporter = build_exporter(config)
            self._built[config.name] = (config.version, exporter)
        if current is not None:
            logger.info("telemetry: exporter %s reconfigured", config.name)
            current[1].shutdown()
        return exporter

    def close_all(self) -> None:
        with self._lock:
            built, self._built = self._built, {}
        for _, exporter in built.values():
            exporter.shutdown()


exporters = ExporterHandler()
