"""Sections other apps add to the config file's org and project entries.

    register_entry_section(kind, key, *, apply, export)

`kind` is "org" or "project"; `key` the YAML key. `apply(instance, value)` applies the value to
the saved Organisation or Project (value None: the key is absent); `export(instance)` returns
what to write, or None to leave the key out. Apps register theirs in AppConfig.ready().
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KINDS = ("org", "project")


@dataclass(frozen=True)
class EntrySection:
    kind: str
    key: str
    apply: Callable[[Any, Any], None]
    export: Callable[[Any], Any]


_sections: dict[tuple[str, str], EntrySection] = {}


def register_entry_section(kind: str, key: str, *, apply, export) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    _sections[(kind, key)] = EntrySection(kind, key, apply, export)


def entry_sections(kind: str) -> list[EntrySection]:
    return [section for (section_kind, _), section in _sections.items() if section_kind == kind]
