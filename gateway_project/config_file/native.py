"""The gateway's own configuration format, read into a plan. See the README's "Configuration as code"."""

from __future__ import annotations

from gateway_project.config_file import sections
from gateway_project.config_file.plan import (
    UNSET,
    ConfigPlan,
    DeploymentPlan,
    GroupPlan,
    OrgPlan,
    Problems,
    ProjectPlan,
    RoutePlan,
)
from gateway_project.config_file.values import SMALL_MAX, Entry, api_key_value, type_name, unique_name
from proxy.models import Fallback, ModelGroup, Project
from proxy.providers.registry import PROVIDERS

TOP_LEVEL_KEYS = ("orgs", "model_groups", "model_routes")
ROUTE_KEYS = frozenset({"model_name", "provider", "upstream_model"})
GROUP_KEYS = frozenset(
    {"name", "strategy", "num_retries", "allowed_fails", "cooldown_seconds", "deployments", "fallbacks"}
)
DEPLOYMENT_KEYS = frozenset(
    {"name", "provider", "upstream_model", "base_url", "api_key", "weight", "enabled"}
    | {"rpm", "tpm", "max_output_tokens"}
)
STRATEGIES = [choice.value for choice in ModelGroup.Strategy]
TRIGGERS = [choice.value for choice in Fallback.Trigger]


def read_native(document: dict) -> ConfigPlan:
    problems = Problems()
    root = Entry(document, "", problems)
    for key in root.unknown_keys(TOP_LEVEL_KEYS):
        problems.add(key, f"unknown key {key!r}; the file's keys are {', '.join(TOP_LEVEL_KEYS)}.")
    plan = ConfigPlan(format="tollgate")
    slugs: set[str] = set()
    for entry in root.entries("orgs"):
        org = _read_org(entry)
        if org is None:
            continue
        if org.slug in slugs:
            problems.add(entry.at("slug"), f"org {org.slug!r} appears twice.")
        slugs.add(org.slug)
        plan.orgs.append(org)
        plan.groups.extend(_read_groups(entry, org_slug=org.slug))
    plan.groups.extend(_read_groups(root, org_slug=None))
    plan.routes = _read_routes(root)
    problems.raise_if_any()
    return plan


def _read_sections(entry: Entry, kind: str, label: str) -> dict:
    registered = {section.key for section in sections.entry_sections(kind)}
    for key in entry.unknown_keys(sections.BUILTIN_KEYS[kind] | registered):
        known = ", ".join(sorted(sections.BUILTIN_KEYS[kind] | registered))
        entry.problems.add(entry.at(key), f"unknown key {key!r} in {label}; an {kind} entry takes {known}.")
    return {key: entry.data[key] for key in registered if key in entry.data}


def _read_org(entry: Entry) -> OrgPlan | None:
    slug = entry.slug("slug")
    if slug is UNSET:
        return None
    org = OrgPlan(path=entry.path, slug=slug, name=entry.string("name"))
    org.sections = _read_sections(entry, "org", f"org {slug!r}")
    seen: set[str] = set()
    for project_entry in entry.entries("projects"):
        project_slug = project_entry.slug("slug")
        if project_slug is UNSET:
            continue
        if project_slug in seen:
            entry.problems.add(project_entry.at("slug"), f"project {project_slug!r} appears twice in org {slug!r}.")
        seen.add(project_slug)
        project = ProjectPlan(
            path=project_entry.path,
            slug=project_slug,
            name=project_entry.string("name"),
            content_logging=project_entry.choice("content_logging", list(Project.ContentLogging.values)),
        )
        project.sections = _read_sections(project_entry, "project", f"project {slug}/{project_slug}")
        org.projects.append(project)
    return org


def _read_groups(parent: Entry, *, org_slug: str | None) -> list[GroupPlan]:
    groups, names = [], set()
    for entry in parent.entries("model_groups"):
        group = _read_group(entry, org_slug=org_slug)
        if group is None:
            continue
        if group.name in names:
            scope = f"org {org_slug!r}" if org_slug else "the shared groups"
            entry.problems.add(entry.at("name"), f"model group {group.name!r} appears twice in {scope}.")
        names.add(group.name)
        groups.append(group)
    return groups


def _read_group(entry: Entry, *, org_slug: str | None) -> GroupPlan | None:
    name = entry.string("name", required=True)
    for key in entry.unknown_keys(GROUP_KEYS):
        entry.problems.add(entry.at(key), f"unknown key {key!r} in model group {name or '?'!r}.")
    defaults = GroupPlan(path="", name="")
    group = GroupPlan(
        path=entry.path,
        name=name,
        org_slug=org_slug,
        strategy=entry.choice("strategy", STRATEGIES, default=defaults.strategy),
        num_retries=entry.integer("num_retries", default=defaults.num_retries, maximum=SMALL_MAX),
        allowed_fails=entry.integer("allowed_fails", default=defaults.allowed_fails, maximum=SMALL_MAX),
        cooldown_seconds=entry.integer("cooldown_seconds", default=defaults.cooldown_seconds),
    )
    deployment_entries = entry.entries("deployments")
    if isinstance(entry.data.get("deployments", []), list) and not entry.data.get("deployments"):
        entry.problems.add(entry.at("deployments"), "a model group needs at least one deployment.")
    taken: set[str] = set()
    for deployment_entry in deployment_entries:
        deployment = _read_deployment(deployment_entry, taken)
        if deployment is not None:
            group.deployments.append(deployment)
    group.fallbacks_path = entry.at("fallbacks")
    fallbacks = entry.mapping("fallbacks")
    if fallbacks is not None:
        for trigger, targets in fallbacks.data.items():
            path = fallbacks.at(str(trigger))
            if trigger not in TRIGGERS:
                entry.problems.add(path, f"unknown trigger {trigger!r}; triggers are {', '.join(TRIGGERS)}.")
            elif not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
                entry.problems.add(path, f"must be a list of model group names, not {type_name(targets)}.")
            else:
                group.fallbacks[trigger] = list(dict.fromkeys(targets))
    return group if isinstance(name, str) else None


def _read_deployment(entry: Entry, taken: set[str]) -> DeploymentPlan | None:
    for key in entry.unknown_keys(DEPLOYMENT_KEYS):
        entry.problems.add(entry.at(key), f"unknown key {key!r} in deployment.")
    provider = entry.choice("provider", sorted(PROVIDERS))
    if not entry.has("provider"):
        entry.problems.add(entry.at("provider"), "is required.")
    upstream_model = entry.string("upstream_model", required=True)
    name = entry.slug("name", required=False)
    if isinstance(name, str):
        if name in taken:
            entry.problems.add(entry.at("name"), f"deployment {name!r} appears twice in its group.")
        taken.add(name)
    api_key_env, api_key = api_key_value(entry, "api_key")
    if provider is UNSET or upstream_model is UNSET or (name is UNSET and entry.has("name")):
        return None
    return DeploymentPlan(
        path=entry.path,
        name=name if isinstance(name, str) else unique_name(f"{provider}-{upstream_model}", taken),
        provider=provider,
        upstream_model=upstream_model,
        base_url=entry.url("base_url"),
        api_key_env=api_key_env,
        api_key=api_key,
        weight=entry.integer("weight", default=1),
        rpm=entry.integer("rpm", default=None, null=True),
        tpm=entry.integer("tpm", default=None, null=True),
        max_output_tokens=entry.integer("max_output_tokens", default=None, minimum=1, null=True),
        enabled=entry.boolean("enabled", default=True),
    )


def _read_routes(root: Entry) -> list[RoutePlan]:
    routes, names = [], set()
    for entry in root.entries("model_routes"):
        for key in entry.unknown_keys(ROUTE_KEYS):
            entry.problems.add(entry.at(key), f"unknown key {key!r} in model route.")
        name = entry.string("model_name", required=True)
        provider = entry.choice("provider", sorted(PROVIDERS))
        if not entry.has("provider"):
            entry.problems.add(entry.at("provider"), "is required.")
        upstream_model = entry.string("upstream_model", default="")
        if name is UNSET or provider is UNSET:
            continue
        if name in names:
            entry.problems.add(entry.at("model_name"), f"model route {name!r} appears twice.")
        names.add(name)
        routes.append(RoutePlan(path=entry.path, model_name=name, provider=provider, upstream_model=upstream_model))
    return routes
