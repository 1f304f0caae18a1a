"""A LiteLLM proxy `config.yaml`, read into the same plan as the gateway's own format.

What maps where, and what is ignored, is in the README ("Switching from LiteLLM"). Every ignored
key is reported as a warning (its path only: values may be secrets).
"""

from __future__ import annotations

import os

from gateway_project.config_file.plan import UNSET, ConfigPlan, DeploymentPlan, GroupPlan, Problems, env_reference_name
from gateway_project.config_file.values import SMALL_MAX, Entry, api_key_value, type_name, unique_name
from proxy.providers.registry import PROVIDERS

# LiteLLM's `provider/` prefixes of `litellm_params.model`, and the provider each one is here.
PREFIXES = {
    **{name: name for name in PROVIDERS},
    "text-completion-openai": "openai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "hosted_vllm": "custom",
    "ollama": "custom",
    "ollama_chat": "custom",
}
# Ollama's native API is not OpenAI's; the same server answers OpenAI's under /v1.
_OPENAI_PATH_ADDED = {"ollama", "ollama_chat"}
STRATEGIES = {"simple-shuffle": "weighted", "least-busy": "least-busy", "latency-based-routing": "latency"}
FALLBACK_KEYS = {
    "fallbacks": "failure",
    "context_window_fallbacks": "context_window",
    "content_policy_fallbacks": "content_policy",
}
POLICY_KEYS = ("num_retries", "allowed_fails", "cooldown_time")
ENTRY_KEYS = {"model_name", "litellm_params", "model_info", "rpm", "tpm"}
PARAM_KEYS = {"model", "api_base", "api_key", "rpm", "tpm", "weight"}
# model_info's output limit; LiteLLM's older name for it is max_tokens.
OUTPUT_LIMIT_KEYS = ("max_output_tokens", "max_tokens")


def is_litellm(document: dict) -> bool:
    return "model_list" in document


def read_litellm(document: dict) -> ConfigPlan:
    problems = Problems()
    plan = ConfigPlan(format="litellm")
    root = Entry(document, "", problems)
    for key in root.unknown_keys({"model_list", "router_settings", "litellm_settings"}):
        variables = document[key] if key == "environment_variables" and isinstance(document[key], dict) else None
        if variables:
            # Names only: the values are often keys.
            plan.warnings.append(f"{key}: ignored; set {', '.join(map(str, variables))} in the gateway's environment.")
        else:
            plan.warnings.append(f"{key}: ignored (the gateway has its own settings for what it does).")
    router = root.mapping("router_settings") or Entry({}, "router_settings", problems)
    module = root.mapping("litellm_settings") or Entry({}, "litellm_settings", problems)
    for key in router.unknown_keys({*POLICY_KEYS, "routing_strategy", *FALLBACK_KEYS}):
        plan.warnings.append(f"{router.at(key)}: ignored.")
    for key in module.unknown_keys({*POLICY_KEYS, *FALLBACK_KEYS}):
        plan.warnings.append(f"{module.at(key)}: ignored.")
    policy = _group_policy(router, module, plan)

    groups: dict[str, GroupPlan] = {}
    for entry in root.entries("model_list"):
        name = entry.string("model_name", required=True)
        taken = {deployment.name for deployment in groups[name].deployments} if name in groups else set()
        deployment = _read_deployment(entry, plan, taken=taken)
        if name is UNSET:
            continue
        group = groups.setdefault(name, GroupPlan(path=entry.path, name=name, **policy))
        if deployment is not None:
            group.deployments.append(deployment)
    if isinstance(document.get("model_list"), list) and not document["model_list"]:
        problems.add("model_list", "lists no model.")

    for settings in (module, router):
        for key, trigger in FALLBACK_KEYS.items():
            _read_fallbacks(settings, key, trigger, groups, plan)
    plan.groups = list(groups.values())
    problems.raise_if_any()
    return plan


def _group_policy(router: Entry, module: Entry, plan: ConfigPlan) -> dict:
    # router_settings is where LiteLLM's proxy reads these; litellm_settings is the older place.
    policy = {}
    for key, field, maximum in (
        ("num_retries", "num_retries", SMALL_MAX),
        ("allowed_fails", "allowed_fails", SMALL_MAX),
        ("cooldown_time", "cooldown_seconds", 2147483647),
    ):
        source = router if router.has(key) else module
        value = source.data.get(key)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, float) and key == "cooldown_time":
            plan.warnings.append(f"{source.at(key)}: {value} rounded up to whole seconds.")
            value = int(value) + 1
        if source.has(key):
            checked = Entry({key: value}, source.path, source.problems).integer(key, maximum=maximum)
            if checked is not UNSET:
                policy[field] = checked
    strategy = router.data.get("routing_strategy")
    if strategy is not None:
        if strategy in STRATEGIES:
            policy["strategy"] = STRATEGIES[strategy]
        else:
            plan.warnings.append(
                f"{router.at('routing_strategy')}: {strategy!r} has no equivalent here; the groups use weighted."
            )
    return policy


def _read_deployment(entry: Entry, plan: ConfigPlan, *, taken: set[str]) -> DeploymentPlan | None:
    for key in entry.unknown_keys(ENTRY_KEYS):
        plan.warnings.append(f"{entry.at(key)}: ignored.")
    params = entry.mapping("litellm_params")
    if params is None:
        if not entry.has("litellm_params"):
            entry.problems.add(entry.at("litellm_params"), "is required.")
        return None
    for key in params.unknown_keys(PARAM_KEYS):
        plan.warnings.append(f"{params.at(key)}: ignored.")
    info = entry.mapping("model_info")
    if info is not None:
        for key in info.unknown_keys({"id", *OUTPUT_LIMIT_KEYS}):
            plan.warnings.append(f"{info.at(key)}: ignored.")
    model = params.string("model", required=True)
    if model is UNSET:
        return None
    prefix, slash, rest = model.partition("/")
    if slash:
        provider = PREFIXES.get(prefix)
        if provider is None:
            known = ", ".join(sorted(PREFIXES))
            entry.problems.add(params.at("model"), f"unknown provider prefix {prefix!r}; known prefixes: {known}.")
            return None
        upstream_model = rest
    else:
        # LiteLLM infers the provider of a bare model name; the gateway's own default does the same for these.
        provider, upstream_model = ("anthropic" if model.startswith("claude") else "openai"), model
    base_url = _base_url(params, prefix if slash else "")
    api_key_env, api_key = api_key_value(params, "api_key")
    model_id = info.string("id") if info is not None else UNSET
    name = unique_name(model_id if isinstance(model_id, str) else f"{provider}-{upstream_model}", taken)

    def limit(key):
        source = params if params.has(key) else entry
        return source.integer(key, default=None, null=True)

    weight = params.integer("weight", default=1)
    output_limit_key = next((key for key in OUTPUT_LIMIT_KEYS if info is not None and info.has(key)), None)
    max_output_tokens = info.integer(output_limit_key, minimum=1, null=True) if output_limit_key else None
    return DeploymentPlan(
        path=entry.path,
        name=name,
        provider=provider,
        upstream_model=upstream_model,
        base_url=base_url,
        api_key_env=api_key_env,
        api_key=api_key,
        weight=weight if isinstance(weight, int) else 1,
        rpm=limit("rpm"),
        tpm=limit("tpm"),
        max_output_tokens=max_output_tokens if isinstance(max_output_tokens, int) else None,
    )


def _base_url(params: Entry, prefix: str) -> str:
    value = params.data.get("api_base")
    name = env_reference_name(value) if isinstance(value, str) else None
    if name is not None:
        # A base URL is no secret: the reference is resolved once, here.
        resolved = os.environ.get(name, "")
        if not resolved:
            params.problems.add(params.at("api_base"), f"the environment variable {name} is not set.")
            return ""
        params = Entry({"api_base": resolved}, params.path, params.problems)
    url = params.url("api_base")
    if url and prefix in _OPENAI_PATH_ADDED and not url.rstrip("/").endswith("/v1"):
        url = url.rstrip("/") + "/v1"
    return url


def _read_fallbacks(settings: Entry, key: str, trigger: str, groups: dict[str, GroupPlan], plan: ConfigPlan) -> None:
    if not settings.has(key) or settings.data[key] is None:
        return
    value = settings.data[key]
    path = settings.at(key)
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list):
        settings.problems.add(
            path, f"must be a list of {{model_name: [fallback model_names]}}, not {type_name(value)}."
        )
        return
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        if not isinstance(item, dict):
            settings.problems.add(
                item_path, f"must be a mapping {{model_name: [fallback model_names]}}, not {type_name(item)}."
            )
            continue
        for source, targets in item.items():
            if source == "*":
                plan.warnings.append(f"{item_path}.*: ignored (a fallback for every group); name each group instead.")
                continue
            if source not in groups:
                settings.problems.add(f"{item_path}.{source}", f"{source!r} is no model_name of model_list.")
                continue
            if isinstance(targets, str):
                targets = [targets]
            if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
                settings.problems.add(f"{item_path}.{source}", "must be a list of model_names.")
                continue
            group = groups[source]
            group.fallbacks_path = item_path
            group.fallbacks[trigger] = list(dict.fromkeys([*group.fallbacks.get(trigger, []), *targets]))
