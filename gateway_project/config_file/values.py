"""Typed reads of one value of a parsed YAML file, each naming the value's path when it is wrong."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from gateway_project.config_file.plan import UNSET, Problems, env_reference_name

SLUG = re.compile(r"[-a-zA-Z0-9_]+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_url = URLValidator(schemes=["http", "https"])
# PositiveSmallIntegerField's and PositiveIntegerField's upper bounds.
SMALL_MAX = 32767
INT_MAX = 2147483647


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer"}.get(
        type(value), type(value).__name__
    )


class Entry:
    """One mapping of the file at `path`: reads its keys and says which ones were never read."""

    def __init__(self, data: dict, path: str, problems: Problems):
        self.data = data
        self.path = path
        self.problems = problems

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def string(self, key: str, *, required: bool = False, max_length: int = 200, default: Any = UNSET) -> Any:
        if key not in self.data:
            if required:
                self.problems.add(self.at(key), "is required.")
            return default
        value = self.data[key]
        if not isinstance(value, str) or (required and not value):
            self.problems.add(self.at(key), f"must be a non-empty string, not {type_name(value)}.")
            return default
        if len(value) > max_length:
            self.problems.add(self.at(key), f"must be at most {max_length} characters.")
            return default
        return value

    def slug(self, key: str, *, required: bool = True, max_length: int = 100) -> Any:
        value = self.string(key, required=required, max_length=max_length)
        if isinstance(value, str) and not SLUG.fullmatch(value):
            self.problems.add(self.at(key), f"{value!r} must be letters, digits, '-' and '_' only.")
            return UNSET
        return value

    def choice(self, key: str, choices: list[str], *, default: Any = UNSET) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        if value not in choices:
            self.problems.add(self.at(key), f"must be one of {', '.join(choices)}, not {value!r}.")
            return default
        return value

    def integer(self, key: str, *, default: Any = UNSET, minimum: int = 0, maximum: int = INT_MAX, null=False) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        if value is None and null:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problems.add(self.at(key), f"must be an integer, not {type_name(value)}.")
            return default
        if not minimum <= value <= maximum:
            self.problems.add(self.at(key), f"must be between {minimum} and {maximum}, not {value}.")
            return default
        return value

    def boolean(self, key: str, *, default: Any = UNSET) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            self.problems.add(self.at(key), f"must be true or false, not {type_name(value)}.")
            return default
        return value

    def url(self, key: str) -> str:
        value = self.string(key, default="")
        if value:
            try:
                _url(value)
            except ValidationError:
                self.problems.add(self.at(key), f"{value!r} is not an http(s) URL.")
                return ""
        # Adapters append paths to it.
        return value.rstrip("/")

    def entries(self, key: str) -> list[Entry]:
        """The mappings of the list under `key` (none when absent)."""
        if key not in self.data or self.data[key] is None:
            return []
        value = self.data[key]
        if not isinstance(value, list):
            self.problems.add(self.at(key), f"must be a list, not {type_name(value)}.")
            return []
        found = []
        for index, item in enumerate(value):
            path = f"{self.at(key)}[{index}]"
            if isinstance(item, dict):
                found.append(Entry(item, path, self.problems))
            else:
                self.problems.add(path, f"must be a mapping, not {type_name(item)}.")
        return found

    def mapping(self, key: str) -> Entry | None:
        if key not in self.data or self.data[key] is None:
            return None
        value = self.data[key]
        if not isinstance(value, dict):
            self.problems.add(self.at(key), f"must be a mapping, not {type_name(value)}.")
            return None
        return Entry(value, self.at(key), self.problems)

    def unknown_keys(self, known) -> list[str]:
        return [key for key in self.data if key not in known]


def api_key_value(entry: Entry, key: str) -> tuple[str, str]:
    """(environment variable name, literal key) from an `api_key` value; at most one is set."""
    if key not in entry.data or entry.data[key] in (None, ""):
        return "", ""
    value = entry.data[key]
    if not isinstance(value, str):
        entry.problems.add(entry.at(key), f"must be a string, not {type_name(value)}.")
        return "", ""
    name = env_reference_name(value)
    if name is None:
        return "", value
    if not ENV_NAME.fullmatch(name) or len(name) > 100:
        entry.problems.add(entry.at(key), f"os.environ/{name} does not name an environment variable.")
        return "", ""
    return name, ""


def unique_name(base: str, taken: set[str]) -> str:
    """`base` as a deployment name (a slug), with -2, -3, ... when it is taken already."""
    slug = re.sub(r"[^-a-zA-Z0-9_]+", "-", base).strip("-").lower()[:90] or "deployment"
    name, counter = slug, 2
    while name in taken:
        name, counter = f"{slug}-{counter}", counter + 1
    taken.add(name)
    return name
