"""What a configuration file asks for, checked and independent of the file's format.

Both formats (the gateway's own and LiteLLM's `config.yaml`) are read into a `ConfigPlan`;
only a plan with no problems is applied. Each piece keeps the path of its entry in the file,
so that an error found while applying still names where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENV_REFERENCE_PREFIX = "os.environ/"


class ConfigError(Exception):
    """A file the gateway will not apply; `problems` are (path, message) pairs, path like `orgs[0].slug`."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{path}: {message}" if path else message for path, message in problems))


class Problems:
    """Collects every problem of a file, so one run names them all."""

    def __init__(self):
        self.found: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.found.append((path, message))

    def raise_if_any(self) -> None:
        if self.found:
            raise ConfigError(self.found)


# Unset: the file does not say, so an existing row keeps its value (a new one gets the default).
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET", "__bool__": lambda self: False})()


@dataclass
class ProjectPlan:
    path: str
    slug: str
    name: Any = UNSET
    content_logging: Any = UNSET
    sections: dict[str, Any] = field(default_factory=dict)


@dataclass
class OrgPlan:
    path: str
    slug: str
    name: Any = UNSET
    projects: list[ProjectPlan] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeploymentPlan:
    path: str
    name: str
    provider: str
    upstream_model: str
    base_url: str = ""
    api_key_env: str = ""
    # A key written in clear in the file; stored encrypted, never echoed.
    api_key: str = field(default="", repr=False)
    weight: int = 1
    rpm: int | None = None
    tpm: int | None = None
    max_output_tokens: int | None = None
    enabled: bool = True


@dataclass
class GroupPlan:
    """A model group, described whole: its deployments and fallbacks replace the stored ones."""

    path: str
    name: str
    org_slug: str | None = None
    strategy: str = "weighted"
    num_retries: int = 2
    allowed_fails: int = 3
    cooldown_seconds: int = 60
    deployments: list[DeploymentPlan] = field(default_factory=list)
    # trigger -> group names, in the order they are tried.
    fallbacks: dict[str, list[str]] = field(default_factory=dict)
    fallbacks_path: str = ""


@dataclass
class RoutePlan:
    path: str
    model_name: str
    provider: str
    upstream_model: str = ""


@dataclass
class ConfigPlan:
    format: str
    orgs: list[OrgPlan] = field(default_factory=list)
    groups: list[GroupPlan] = field(default_factory=list)
    routes: list[RoutePlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def env_reference_name(value: str) -> str | None:
    """NAME for an `os.environ/NAME` reference, else None."""
    if isinstance(value, str) and value.startswith(ENV_REFERENCE_PREFIX):
        return value[len(ENV_REFERENCE_PREFIX) :]
    return None
