"""Apply a configuration file to the database, and write the database back as one.

    plan = config_plan_read(text=path.read_text())
    result = gateway_config_apply(plan=plan, dry_run=False)
    exported = gateway_config_export()

A plan is checked whole before the first write, and applied in one transaction, so a file is
applied entirely or not at all. Rows are saved only where a value differs: a second apply of the
same file writes nothing. Orgs, projects, model groups and routes the file does not mention are left alone;
a model group the file describes is described whole (deployments and fallbacks it does not list
are removed from it).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import yaml
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from gateway_project.config_file import sections
from gateway_project.config_file.litellm import is_litellm, read_litellm
from gateway_project.config_file.native import TRIGGERS, read_native
from gateway_project.config_file.plan import (
    ENV_REFERENCE_PREFIX,
    UNSET,
    ConfigError,
    ConfigPlan,
    DeploymentPlan,
    GroupPlan,
    Problems,
)
from proxy.models import Deployment, Fallback, ModelGroup, ModelRoute, Organisation, Project

KINDS = ("orgs", "projects", "model groups", "deployments", "fallbacks", "model routes")
# Several gateway containers may apply the same file as they start: one at a time, the others then find it applied.
_APPLY_LOCK_ID = 0x7467_636F_6E66  # "tgconf"


@dataclass
class ApplyResult:
    counts: dict[str, Counter] = field(default_factory=lambda: {kind: Counter() for kind in KINDS})
    # One line per change, e.g. "updated deployment gpt-4o/openai-main: weight".
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False

    def note(self, kind: str, outcome: str, label: str, fields: list[str] | None = None) -> None:
        self.counts[kind][outcome] += 1
        if outcome != "unchanged":
            self.changes.append(f"{outcome} {label}" + (f": {', '.join(fields)}" if fields else ""))


@dataclass
class ExportResult:
    document: dict
    # Variables to set before applying the export: keys stored encrypted are written as references.
    variables_to_set: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        return yaml.safe_dump(self.document, sort_keys=False, allow_unicode=True)


def config_plan_read(*, text: str) -> ConfigPlan:
    """The plan of a file in either format: LiteLLM's (it has `model_list`) or the gateway's own."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([("", f"not valid YAML: {where}{getattr(exc, 'problem', None) or exc}")]) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError([("", "the file must be a mapping (orgs:, model_groups:, or LiteLLM's model_list:).")])
    return read_litellm(document) if is_litellm(document) else read_native(document)


class _DryRun(Exception):
    pass


def gateway_config_apply(*, plan: ConfigPlan, dry_run: bool = False) -> ApplyResult:
    """Create or update what the plan describes; with `dry_run`, work out the same changes and keep none."""
    result = ApplyResult(warnings=list(plan.warnings), dry_run=dry_run)
    result.warnings.extend(_clear_key_warnings(plan))
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_APPLY_LOCK_ID])
            _check_fallback_targets(plan)
            orgs = {org_plan.slug: _apply_org(org_plan, result) for org_plan in plan.orgs}
            groups = {(g.org_slug, g.name): _apply_group(g, orgs, result) for g in plan.groups}
            for group_plan in plan.groups:
                _apply_fallbacks(group_plan, groups[(group_plan.org_slug, group_plan.name)], groups, result)
            for route_plan in plan.routes:
                _apply_route(route_plan, result)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return result


def _clear_key_warnings(plan: ConfigPlan) -> list[str]:
    return [
        f"{deployment.path}.api_key: a key in clear in the file; it is stored encrypted, "
        f"but {ENV_REFERENCE_PREFIX}NAME keeps it out of the file."
        for group in plan.groups
        for deployment in group.deployments
        if deployment.api_key
    ]


def _stored_group_names() -> set[tuple[str | None, str]]:
    return {(slug, name) for slug, name in ModelGroup.objects.values_list("org__slug", "name")}


def _check_fallback_targets(plan: ConfigPlan) -> None:
    known = _stored_group_names() | {(group.org_slug, group.name) for group in plan.groups}
    problems = Problems()
    for group in plan.groups:
        for trigger, targets in group.fallbacks.items():
            for target in targets:
                if target == group.name:
                    problems.add(f"{group.fallbacks_path}.{trigger}", f"model group {target!r} falls back to itself.")
                elif (group.org_slug, target) not in known and (None, target) not in known:
                    scope = f"org {group.org_slug!r} or shared" if group.org_slug else "shared"
                    problems.add(f"{group.fallbacks_path}.{trigger}", f"no {scope} model group is named {target!r}.")
    problems.raise_if_any()


def _assign(instance, values: dict) -> list[str]:
    """Set the values that differ; returns the names of those fields."""
    changed = [name for name, value in values.items() if value is not UNSET and getattr(instance, name) != value]
    for name in changed:
        setattr(instance, name, values[name])
    return changed


def _save(instance, values: dict, *, kind: str, label: str, result: ApplyResult, defaults: dict) -> list[str]:
    if instance.pk is None:
        _assign(instance, {**defaults, **{k: v for k, v in values.items() if v is not UNSET}})
        instance.save()
        result.note(kind, "created", label)
        return []
    changed = _assign(instance, values)
    if changed:
        instance.save(update_fields=changed)
    return changed


def _apply_sections(instance, kind: str, values: dict, path: str) -> list[str]:
    """Every registered section of `kind` for one entry; returns the keys whose exported value changed."""
    changed = []
    for section in sections.entry_sections(kind):
        value = values.get(section.key)
        before = section.export(instance)
        try:
            section.apply(instance, value)
        except ValidationError as exc:
            raise ConfigError([(f"{path}.{section.key}", " ".join(exc.messages))]) from None
        except ValueError as exc:
            raise ConfigError([(f"{path}.{section.key}", str(exc))]) from None
        if section.export(instance) != before:
            changed.append(section.key)
    return changed


def _apply_org(org_plan, result: ApplyResult) -> Organisation:
    org = Organisation.objects.filter(slug=org_plan.slug).first() or Organisation(slug=org_plan.slug)
    created = org.pk is None
    label = f"org {org_plan.slug}"
    changed = _save(org, {"name": org_plan.name}, kind="orgs", label=label, result=result, defaults={"name": org.slug})
    changed += _apply_sections(org, "org", org_plan.sections, org_plan.path)
    if not created:
        result.note("orgs", "updated" if changed else "unchanged", label, changed)
    for project_plan in org_plan.projects:
        _apply_project(org, project_plan, result)
    return org


def _apply_project(org: Organisation, project_plan, result: ApplyResult) -> Project:
    project = Project.objects.filter(org=org, slug=project_plan.slug).first() or Project(
        org=org, slug=project_plan.slug
    )
    created = project.pk is None
    label = f"project {org.slug}/{project_plan.slug}"
    values = {"name": project_plan.name, "content_logging": project_plan.content_logging}
    changed = _save(project, values, kind="projects", label=label, result=result, defaults={"name": project.slug})
    changed += _apply_sections(project, "project", project_plan.sections, project_plan.path)
    if not created:
        result.note("projects", "updated" if changed else "unchanged", label, changed)
    return project


def _group_label(group_plan: GroupPlan) -> str:
    return f"{group_plan.org_slug}: {group_plan.name}" if group_plan.org_slug else group_plan.name


def _apply_group(group_plan: GroupPlan, orgs: dict[str, Organisation], result: ApplyResult) -> ModelGroup:
    org = orgs[group_plan.org_slug] if group_plan.org_slug else None
    group = ModelGroup.objects.filter(org=org, name=group_plan.name).first() or ModelGroup(
        org=org, name=group_plan.name
    )
    created = group.pk is None
    label = f"model group {_group_label(group_plan)}"
    values = {
        "strategy": group_plan.strategy,
        "num_retries": group_plan.num_retries,
        "allowed_fails": group_plan.allowed_fails,
        "cooldown_seconds": group_plan.cooldown_seconds,
    }
    changed = _save(group, values, kind="model groups", label=label, result=result, defaults={})
    if not created:
        result.note("model groups", "updated" if changed else "unchanged", label, changed)
    stored = {deployment.name: deployment for deployment in group.deployments.all()} if not created else {}
    for deployment_plan in group_plan.deployments:
        _apply_deployment(group, stored.pop(deployment_plan.name, None), deployment_plan, group_plan, result)
    for name, deployment in stored.items():
        deployment.delete()
        result.note("deployments", "deleted", f"deployment {_group_label(group_plan)}/{name}")
    return group


def _apply_deployment(group, deployment, plan: DeploymentPlan, group_plan: GroupPlan, result: ApplyResult) -> None:
    created = deployment is None
    deployment = deployment or Deployment(group=group, name=plan.name)
    label = f"deployment {_group_label(group_plan)}/{plan.name}"
    values = {
        "provider": plan.provider,
        "upstream_model": plan.upstream_model,
        "base_url": plan.base_url,
        "api_key_env": plan.api_key_env,
        "weight": plan.weight,
        "rpm": plan.rpm,
        "tpm": plan.tpm,
        "max_output_tokens": plan.max_output_tokens,
        "enabled": plan.enabled,
    }
    changed = _assign(deployment, values)
    # Encrypted values differ on every encryption, so the stored key is compared in clear.
    if deployment.api_key != plan.api_key:
        deployment.api_key = plan.api_key
        changed.append("api_key")
    if created:
        deployment.save()
        result.note("deployments", "created", label)
        return
    if changed:
        fields = [("api_key_encrypted" if name == "api_key" else name) for name in changed]
        deployment.save(update_fields=fields)
    result.note("deployments", "updated" if changed else "unchanged", label, changed)


def _resolve_group(name: str, org_slug: str | None, groups: dict) -> ModelGroup:
    """A fallback target: the org's own group of that name, else the shared one (as requests are routed)."""
    for key in ((org_slug, name), (None, name)):
        if key in groups:
            return groups[key]
    own = ModelGroup.objects.filter(org__slug=org_slug, name=name).first() if org_slug else None
    return own or ModelGroup.objects.get(org__isnull=True, name=name)


def _apply_fallbacks(group_plan: GroupPlan, group: ModelGroup, groups: dict, result: ApplyResult) -> None:
    stored = {(fallback.trigger, fallback.to_group_id): fallback for fallback in group.fallbacks.all()}
    label = _group_label(group_plan)
    for trigger in TRIGGERS:
        for position, target in enumerate(group_plan.fallbacks.get(trigger, [])):
            to_group = _resolve_group(target, group_plan.org_slug, groups)
            fallback = stored.pop((trigger, to_group.pk), None)
            fallback_label = f"fallback {label} → {target} ({trigger})"
            if fallback is None:
                Fallback.objects.create(group=group, trigger=trigger, to_group=to_group, position=position)
                result.note("fallbacks", "created", fallback_label)
            elif fallback.position != position:
                fallback.position = position
                fallback.save(update_fields=["position"])
                result.note("fallbacks", "updated", fallback_label, ["position"])
            else:
                result.note("fallbacks", "unchanged", fallback_label)
    for (trigger, _), fallback in stored.items():
        fallback.delete()
        result.note("fallbacks", "deleted", f"fallback {label} → {fallback.to_group.name} ({trigger})")


def _apply_route(route_plan, result: ApplyResult) -> None:
    route = ModelRoute.objects.filter(model_name=route_plan.model_name).first()
    label = f"model route {route_plan.model_name}"
    values = {"provider": route_plan.provider, "upstream_model": route_plan.upstream_model}
    if route is None:
        ModelRoute.objects.create(model_name=route_plan.model_name, **values)
        result.note("model routes", "created", label)
        return
    changed = _assign(route, values)
    if changed:
        route.save(update_fields=changed)
    result.note("model routes", "updated" if changed else "unchanged", label, changed)


# --- Export ----------------------------------------------------------------------------------------


def gateway_config_export() -> ExportResult:
    """Every org, project, model group and model route as a file `gateway_config apply` takes; no secret in clear."""
    result = ExportResult(document={})
    groups = list(
        ModelGroup.objects.select_related("org").prefetch_related("deployments", "fallbacks__to_group").order_by("name")
    )
    orgs = []
    for org in Organisation.objects.prefetch_related("projects").order_by("slug"):
        entry = {"slug": org.slug, "name": org.name, **_exported_sections(org, "org")}
        projects = [
            {
                "slug": project.slug,
                "name": project.name,
                "content_logging": project.content_logging,
                **_exported_sections(project, "project"),
            }
            for project in sorted(org.projects.all(), key=lambda p: p.slug)
        ]
        if projects:
            entry["projects"] = projects
        own_groups = [_exported_group(group, result) for group in groups if group.org_id == org.pk]
        if own_groups:
            entry["model_groups"] = own_groups
        orgs.append(entry)
    if orgs:
        result.document["orgs"] = orgs
    shared = [_exported_group(group, result) for group in groups if group.org_id is None]
    if shared:
        result.document["model_groups"] = shared
    routes = [
        {"model_name": name, "provider": provider, **({"upstream_model": upstream} if upstream else {})}
        for name, provider, upstream in ModelRoute.objects.order_by("model_name").values_list(
            "model_name", "provider", "upstream_model"
        )
    ]
    if routes:
        result.document["model_routes"] = routes
    return result


def _exported_sections(instance, kind: str) -> dict:
    exported = {}
    for section in sections.entry_sections(kind):
        value = section.export(instance)
        if value is not None:
            exported[section.key] = value
    return exported


def _exported_group(group: ModelGroup, result: ExportResult) -> dict:
    entry = {
        "name": group.name,
        "strategy": group.strategy,
        "num_retries": group.num_retries,
        "allowed_fails": group.allowed_fails,
        "cooldown_seconds": group.cooldown_seconds,
        "deployments": [
            _exported_deployment(group, deployment, result)
            for deployment in sorted(group.deployments.all(), key=lambda d: d.name)
        ],
    }
    fallbacks: dict[str, list[str]] = {}
    for fallback in sorted(group.fallbacks.all(), key=lambda f: (TRIGGERS.index(f.trigger), f.position, f.pk)):
        fallbacks.setdefault(fallback.trigger, []).append(fallback.to_group.name)
    if fallbacks:
        entry["fallbacks"] = fallbacks
    return entry


def _exported_deployment(group: ModelGroup, deployment: Deployment, result: ExportResult) -> dict:
    entry = {"name": deployment.name, "provider": deployment.provider, "upstream_model": deployment.upstream_model}
    if deployment.base_url:
        entry["base_url"] = deployment.base_url
    if deployment.api_key_env:
        entry["api_key"] = ENV_REFERENCE_PREFIX + deployment.api_key_env
    elif deployment.api_key_encrypted:
        # The key stays in the database; the file names a variable to hold it instead.
        name = exported_key_variable(group, deployment)
        entry["api_key"] = ENV_REFERENCE_PREFIX + name
        result.variables_to_set.append(name)
    entry["weight"] = deployment.weight
    if deployment.rpm is not None:
        entry["rpm"] = deployment.rpm
    if deployment.tpm is not None:
        entry["tpm"] = deployment.tpm
    if deployment.max_output_tokens is not None:
        entry["max_output_tokens"] = deployment.max_output_tokens
    if not deployment.enabled:
        entry["enabled"] = False
    return entry


def exported_key_variable(group: ModelGroup, deployment: Deployment) -> str:
    """The variable an exported file names for a deployment whose key is stored encrypted."""
    parts = [group.org.slug if group.org_id else "", group.name, deployment.name, "API_KEY"]
    return re.sub(r"[^A-Z0-9]+", "_", "_".join(part for part in parts if part).upper()).strip("_")
