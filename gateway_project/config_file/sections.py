"""Keys other apps add to org and project entries of the configuration file.

An app registers its keys in its AppConfig.ready():

    register_entry_section("org", "budget", apply=org_budget_apply, export=org_budget_export)

`apply(instance, value)` runs for every org (or project) entry of an applied file, after the
instance is saved, with the key's value or None when the entry has no such key (the section says
whether None removes its setting or leaves it). It raises ValueError or
django.core.exceptions.ValidationError for a bad value; the file is then refused as a whole.
It runs inside the apply's transaction, which a dry run rolls back: it should write to the
database only. The apply reports an entry as updated when `export` returns another value after it.
`export(instance)` returns the value to write under the key, or None to leave the key out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KINDS = ("org", "project")
# Keys the configuration file itself gives to org and project entries.
BUILTIN_KEYS = {
    "org": frozenset({"slug", "name", "projects", "model_groups"}),
    "project": frozenset({"slug", "name", "content_logging"}),
}


@dataclass(frozen=True)
class EntrySection:
    kind: str
    key: str
    apply: Callable[[Any, Any], None]
    export: Callable[[Any], Any]


_sections: dict[str, dict[str, EntrySection]] = {kind: {} for kind in KINDS}


def register_entry_section(
    kind: str, key: str, *, apply: Callable[[Any, Any], None], export: Callable[[Any], Any]
) -> EntrySection:
    """Let org ("org") or project ("project") entries carry `key`, applied and exported by the given functions."""
    if kind not in KINDS:
        raise ValueError(f"An entry section is for 'org' or 'project' entries, not {kind!r}.")
    if key in BUILTIN_KEYS[kind]:
        raise ValueError(f"{key!r} is a key of the configuration file's own {kind} entries.")
    existing = _sections[kind].get(key)
    section = EntrySection(kind=kind, key=key, apply=apply, export=export)
    if existing is not None and existing != section:
        raise ValueError(f"The {kind} entry key {key!r} is registered already.")
    _sections[kind][key] = section
    return section


def unregister_entry_section(kind: str, key: str) -> None:
    """Forget a section (for tests that register one of their own)."""
    _sections[kind].pop(key, None)


def entry_sections(kind: str) -> list[EntrySection]:
    """The sections registered for `kind`, in registration order (the order export writes them)."""
    return list(_sections[kind].values())
