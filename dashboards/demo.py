"""Realistic demo traffic for the dashboards: orgs, projects, end users, models and their logs.

The documents have the shape `telemetry.record.RequestRecord.to_document()` produces
(requests, responses, streamed chunks, redaction, errors), and the traffic has a shape too:
busy working hours and quiet weekends, growth over the period, heavy and light users,
provider incidents. Documents are produced in time order, fast enough to load ten million of
them: each is assembled from pre-serialised fragments, and stored through
`telemetry.services.request_logs_load`, which derives the table's columns from it.
"""

from __future__ import annotations

import itertools
import math
import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson

# (provider, model, USD per 1M input tokens, per 1M output tokens, median TTFB ms, ms per output token, share)
MODELS = (
    ("openai", "gpt-4o", 2.50, 10.00, 450, 12, 18),
    ("openai", "gpt-4o-mini", 0.15, 0.60, 300, 7, 30),
    ("openai", "o3-mini", 1.10, 4.40, 1800, 9, 5),
    ("anthropic", "claude-sonnet-4-20250514", 3.00, 15.00, 700, 14, 16),
    ("anthropic", "claude-3-5-haiku-20241022", 0.80, 4.00, 420, 8, 10),
    ("groq", "llama-3.3-70b-versatile", 0.59, 0.79, 180, 3, 7),
    ("mistral", "mistral-large-latest", 2.00, 6.00, 500, 11, 5),
    ("gemini", "gemini-2.0-flash", 0.10, 0.40, 350, 5, 6),
    ("deepseek", "deepseek-chat", 0.27, 1.10, 900, 16, 3),
)
# Demo orgs are named as such ("demo-acme", "Demo: Acme Corporation"), so that they never take the
# name of a real org and `remove_demo_data` finds them.
DEMO_SLUG_PREFIX = "demo-"
DEMO_NAME_PREFIX = "Demo: "
ORG_NAMES = (
    ("acme", "Acme Corporation"),
    ("globex", "Globex"),
    ("initech", "Initech"),
    ("umbrella", "Umbrella Health"),
    ("hooli", "Hooli"),
    ("stark", "Stark Industries"),
    ("wayne", "Wayne Enterprises"),
    ("tyrell", "Tyrell Corporation"),
)
PROJECTS = (
    ("support-bot", "Support bot"),
    ("search", "Search answers"),
    ("summariser", "Document summariser"),
    ("code-review", "Code review assistant"),
    ("data-extraction", "Invoice data extraction"),
    ("sales-assist", "Sales email drafts"),
    ("translation", "Translation"),
)
FIRST_NAMES = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "nia",
    "oscar", "peggy", "quinn", "rupert", "sybil", "trent", "uma", "victor", "wendy", "xavier", "yara", "zoe",
)  # fmt: skip
PROMPTS = {
    "support-bot": (
        ("You are a friendly support agent for a billing product.", "How do I change the card on my account?",
         "Go to Settings, then Billing, choose Payment methods and click Replace card. The new card is charged "
         "from the next invoice."),
        ("You are a friendly support agent for a billing product.", "Why was I charged twice this month?",
         "It looks like one charge is a pending authorisation that will drop off within three working days."),
    ),
    "search": (
        ("Answer using only the given passages and cite them.", "What is the refund window for annual plans?",
         "Annual plans can be refunded in full within 30 days of purchase [2]."),
        ("Answer using only the given passages and cite them.", "Which regions is the service hosted in?",
         "The service runs in Frankfurt and Dublin, with backups in Amsterdam [1][4]."),
    ),
    "summariser": (
        ("Summarise the document in three bullet points.", "Quarterly report: revenue grew 12% while costs held…",
         "- Revenue up 12% on the quarter\n- Costs flat, margin up 3 points\n- Outlook raised for the year"),
        ("Summarise the document in three bullet points.", "Meeting notes: the launch moves to May because…",
         "- Launch moved to May\n- QA needs two more weeks\n- Marketing plan unchanged"),
    ),
    "code-review": (
        ("Review the diff and point out bugs.", "def total(xs):\n    return sum(xs) / len(xs)",
         "This divides by zero for an empty list; return 0 or raise a clear error when xs is empty."),
        ("Review the diff and point out bugs.", "for i in range(len(items)): items.remove(items[i])",
         "Removing while iterating by index skips elements and eventually raises IndexError."),
    ),
    "data-extraction": (
        ("Extract the fields as JSON.", "Invoice 2024-118 from Northwind, total EUR 1,240.00, due 30 June",
         '{"invoice": "2024-118", "supplier": "Northwind", "total": 1240.0, "currency": "EUR"}'),
    ),
    "sales-assist": (
        ("Draft a short, warm follow-up email.", "Follow up with Dana after yesterday's demo of the analytics add-on",
         "Hi Dana, thanks again for your time yesterday. I've attached the pricing we discussed…"),
    ),
    "translation": (
        ("Translate into French.", "Your order has shipped and will arrive on Thursday.",
         "Votre commande a été expédiée et arrivera jeudi."),
        ("Translate into German.", "Please reset your password within 24 hours.",
         "Bitte setzen Sie Ihr Passwort innerhalb von 24 Stunden zurück."),
    ),
}  # fmt: skip
# Support-bot conversations in which the model has called a tool and reads its result:
# (system, question, answer, tool name, arguments, tool result).
TOOL_PROMPTS = (
    ("You are a friendly support agent for a billing product. Use the tools to look things up.",
     "Has my refund for order 4821 gone through?", "Yes: the refund of EUR 49.00 for order 4821 was issued on "
     "Monday and should reach your card within five working days.", "lookup_refund", {"order_id": "4821"},
     {"order_id": "4821", "status": "issued", "amount": "49.00", "currency": "EUR", "issued_on": "Monday"}),
    ("You are a friendly support agent for a billing product. Use the tools to look things up.",
     "Which plan am I on, and when does it renew?", "You are on the Team plan (annual), which renews on "
     "1 March. Nothing needs doing before then.", "get_subscription", {"account": "current"},
     {"plan": "Team", "billing": "annual", "renews_on": "1 March"}),
)  # fmt: skip
# Of the support bot's requests, every TOOL_EVERY-th is one of these.
TOOL_EVERY = 3
# (error type, status code, share of errors, message)
ERRORS = (
    ("rate_limit_error", 429, 40, "Rate limit reached for requests"),
    ("server_error", 500, 14, "The server had an error while processing your request"),
    ("overloaded_error", 529, 10, "Overloaded"),
    ("timeout", 504, 10, "The upstream provider did not answer in time"),
    ("invalid_request_error", 400, 14, "This model's maximum context length is 128000 tokens"),
    ("authentication_error", 401, 4, "Incorrect API key provided"),
    ("bad_gateway", 502, 8, "Bad gateway"),
)
BASE_ERROR_RATE = 0.02


@dataclass
class DemoUser:
    user_id: str
    project: str
    models: list[int]
    model_weights: list[float]
    model_cum_weights: list[float] = field(default_factory=list)


@dataclass
class DemoOrg:
    slug: str
    name: str
    weight: float
    projects: list[tuple[str, str, str]]  # slug, name, content logging
    users: list[DemoUser] = field(default_factory=list)
    user_weights: list[float] = field(default_factory=list)
    user_cum_weights: list[float] = field(default_factory=list)
    experiments: dict[str, list[str]] = field(default_factory=dict)

    @property
    def metadata_only(self) -> dict[str, bool]:
        return {slug: logging == "metadata" for slug, _, logging in self.projects}

    def finish(self) -> None:
        """Cumulative weights, so that picking a user or a model per request is a bisection."""
        self.user_cum_weights = list(itertools.accumulate(self.user_weights))
        for user in self.users:
            user.model_cum_weights = list(itertools.accumulate(user.model_weights))


def demo_org_name(index: int) -> tuple[str, str]:
    """The slug and name of the demo org at `index`."""
    base, name = ORG_NAMES[index] if index < len(ORG_NAMES) else (f"org-{index + 1}", f"Org {index + 1}")
    return DEMO_SLUG_PREFIX + base, DEMO_NAME_PREFIX + name


def is_demo_slug(slug: str) -> bool:
    """Whether `slug` is one `build_world` gives a demo org."""
    base = slug.removeprefix(DEMO_SLUG_PREFIX)
    if base == slug:
        return False
    known = {org_base for org_base, _ in ORG_NAMES}
    return base in known or (base.startswith("org-") and base[4:].isdigit())


def build_world(*, org_count: int, seed: int = 7) -> list[DemoOrg]:
    """The orgs, projects, users and habits the demo traffic comes from; the same for a given seed."""
    rng = random.Random(seed)
    orgs = []
    for index in range(org_count):
        slug, name = demo_org_name(index)
        project_specs = rng.sample(PROJECTS, rng.randint(3, 5))
        projects = [
            (project_slug, project_name, "metadata" if project_slug == "data-extraction" else "full")
            for project_slug, project_name in project_specs
        ]
        org = DemoOrg(slug=slug, name=name, weight=1.0 / (index + 1) ** 0.6, projects=projects)
        for number in range(rng.randint(25, 70)):
            first = FIRST_NAMES[number % len(FIRST_NAMES)]
            models = rng.sample(range(len(MODELS)), rng.randint(1, 3))
            org.users.append(
                DemoUser(
                    user_id=f"{first}.{number // len(FIRST_NAMES) + 1}@{slug.removeprefix(DEMO_SLUG_PREFIX)}.example",
                    project=rng.choice(projects)[0],
                    models=models,
                    model_weights=[MODELS[model][6] * rng.uniform(0.5, 1.5) for model in models],
                )
            )
            # A few heavy users carry most traffic, as in real deployments.
            org.user_weights.append(rng.paretovariate(1.3))
        for project_slug, _, _ in projects:
            if rng.random() < 0.5:
                org.experiments[project_slug] = [f"{project_slug}-prompt-v{version}" for version in (2, 3)]
        org.finish()
        orgs.append(org)
    return orgs


def hourly_counts(*, count: int, start: datetime, hours: int, rng: random.Random) -> list[int]:
    """How many requests fall in each hour: a working-day curve, quiet weekends, growth over time."""
    weights = []
    for hour in range(hours):
        moment = start + timedelta(hours=hour)
        daily = 0.25 + math.exp(-(((moment.hour - 14) / 4.5) ** 2))
        weekly = 0.45 if moment.weekday() >= 5 else 1.0
        growth = 0.6 + 0.8 * hour / max(hours, 1)
        weights.append(daily * weekly * growth * rng.uniform(0.85, 1.15))
    scale = count / sum(weights)
    counts = [int(weight * scale) for weight in weights]
    for index in rng.sample(range(hours), min(hours, count - sum(counts))):
        counts[index] += 1
    return counts


def _dumps(value) -> str:
    return orjson.dumps(value).decode()


class _Fragments:
    """Pre-serialised request and response JSON, built once per (prompt, model, shape)."""

    def __init__(self):
        self._cache: dict[tuple, str] = {}

    def request(self, *, model: str, anthropic: bool, prompt: tuple[str, str, str], stream: bool, redacted: bool):
        key = ("request", model, prompt[1], stream, redacted)
        if key not in self._cache:
            system, question = prompt[:2]
            body: dict = {"model": model, "max_tokens": 1024, "temperature": 0.3, "stream": stream}
            if anthropic:
                body |= {"system": system, "messages": [{"role": "user", "content": question}]}
            else:
                body["messages"] = [{"role": "system", "content": system}, {"role": "user", "content": question}]
            if len(prompt) > 3:
                _add_tool_turns(body, prompt=prompt, anthropic=anthropic)
            if redacted:
                hidden = ("messages", "system", "tools")
                body = {key: "[redacted]" if key in hidden else value for key, value in body.items()}
            self._cache[key] = _dumps(body)
        return self._cache[key]

    def answer(self, *, model: str, anthropic: bool, prompt: tuple[str, str, str], stream: bool) -> tuple[str, str]:
        """The response JSON up to (not including) its usage, and its streamed chunks without usage."""
        key = ("answer", model, prompt[1], stream)
        if key not in self._cache:
            text = prompt[2]
            if anthropic:
                head = {"id": "msg_demo", "type": "message", "role": "assistant", "model": model}
                head |= {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}
            else:
                head = {"id": "chatcmpl-demo", "object": "chat.completion", "created": 0, "model": model}
                head["choices"] = [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ]
            pieces = [text[i : i + max(1, len(text) // 4)] for i in range(0, len(text), max(1, len(text) // 4))]
            if anthropic:
                chunks = [{"type": "message_start", "message": {"id": "msg_demo", "model": model, "role": "assistant"}}]
                chunks += [
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
                    for piece in pieces
                ]
            else:
                chunks = [
                    {"id": "chatcmpl-demo", "object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": {"content": piece}}]}
                    for piece in pieces
                ]  # fmt: skip
            self._cache[key] = (_dumps(head)[:-1], _dumps(chunks)[1:-1])
        return self._cache[key]


def _add_tool_turns(body: dict, *, prompt: tuple, anthropic: bool) -> None:
    """The model's call of the prompt's tool and the tool's result, after the question."""
    name, arguments, result = prompt[3:]
    call_id = f"call_{name}"
    schema = {"type": "object", "properties": {key: {"type": "string"} for key in arguments}}
    if anthropic:
        body["tools"] = [{"name": name, "description": f"{name.replace('_', ' ')}", "input_schema": schema}]
        body["messages"] += [
            {"role": "assistant", "content": [{"type": "tool_use", "id": call_id, "name": name, "input": arguments}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id, "content": _dumps(result)}]},
        ]
    else:
        body["tools"] = [{"type": "function", "function": {"name": name, "parameters": schema}}]
        call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": _dumps(arguments)}}
        body["messages"] += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": _dumps(result)},
        ]


@dataclass(frozen=True)
class DemoPlan:
    """Everything shared by the workers that generate one demo load: who, when, and how much."""

    orgs: list[DemoOrg]
    start: datetime
    end: datetime
    counts: list[int]
    incidents: frozenset[tuple[int, str]]
    prefix: str
    seed: int

    @property
    def total(self) -> int:
        return sum(self.counts)

    def chunks(self, *, rows_per_chunk: int) -> list[range]:
        """Consecutive hour ranges holding about `rows_per_chunk` rows each."""
        chunks, first, rows = [], 0, 0
        for hour, count in enumerate(self.counts):
            rows += count
            if rows >= rows_per_chunk:
                chunks.append(range(first, hour + 1))
                first, rows = hour + 1, 0
        if first < len(self.counts):
            chunks.append(range(first, len(self.counts)))
        return chunks


def plan_demo(*, org_count: int, count: int, days: int, end: datetime, seed: int = 11) -> DemoPlan:
    rng = random.Random(seed)
    hours = days * 24
    start = end.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    # Provider incidents: a few two-hour spells in which one provider fails a third of its requests.
    incidents = {(rng.randrange(hours), rng.choice(MODELS)[0]) for _ in range(max(1, days // 6))}
    incidents |= {(hour + 1, provider) for hour, provider in incidents}
    return DemoPlan(
        orgs=build_world(org_count=org_count),
        start=start,
        end=end,
        counts=hourly_counts(count=count, start=start, hours=hours, rng=rng),
        incidents=frozenset(incidents),
        # Ids are this random prefix and a serial number: unique within and across loads.
        prefix=secrets.token_hex(6),
        seed=seed,
    )


def generate_documents(*, plan: DemoPlan, hours: range) -> Iterator[dict]:
    """The record documents of the plan's `hours` (indexes from its start), oldest first; the same
    on every call."""
    rng = random.Random(plan.seed * 1_000_003 + hours.start)
    orgs = plan.orgs
    incidents = plan.incidents
    fragments = _Fragments()
    prefix = plan.prefix
    org_weights = [org.weight for org in orgs]
    metadata_only = {org.slug: org.metadata_only for org in orgs}
    error_weights = [error[2] for error in ERRORS]
    serial = sum(plan.counts[: hours.start])
    resource = _dumps({"service.name": "tollgate", "service.version": "0.1.0", "deployment.environment": "demo"})
    for hour in hours:
        hour_count = plan.counts[hour]
        if not hour_count:
            continue
        moment = plan.start + timedelta(hours=hour)
        stamp = moment.strftime("%Y-%m-%dT%H:")
        # The current hour is only filled up to `end`: no request comes from the future.
        span = max(1, min(3_600_000, int((plan.end - moment).total_seconds() * 1000)))
        offsets = sorted(rng.randrange(span) for _ in range(hour_count))
        chosen_orgs = rng.choices(orgs, weights=org_weights, k=hour_count)
        for offset, org in zip(offsets, chosen_orgs, strict=True):
            serial += 1
            user = rng.choices(org.users, cum_weights=org.user_cum_weights)[0]
            model_index = rng.choices(user.models, cum_weights=user.model_cum_weights)[0]
            provider, model, price_in, price_out, ttfb_median, per_token, _ = MODELS[model_index]
            anthropic = provider == "anthropic"
            project = user.project if rng.random() < 0.85 else rng.choice(org.projects)[0]
            redacted = metadata_only[org.slug].get(project, False)
            experiments = org.experiments.get(project)
            experiment = rng.choice(experiments) if experiments and rng.random() < 0.3 else None
            stream = rng.random() < 0.45
            error_rate = 0.33 if (hour, provider) in incidents else BASE_ERROR_RATE
            failed = rng.random() < error_rate
            prompt = rng.choice(PROMPTS.get(project) or PROMPTS["support-bot"])
            if project == "support-bot" and serial % TOOL_EVERY == 0:
                prompt = TOOL_PROMPTS[serial // TOOL_EVERY % len(TOOL_PROMPTS)]
            input_tokens = max(12, int(rng.lognormvariate(6.6, 0.8)))
            seconds, millis = divmod(offset, 1000)
            minute, second = divmod(seconds, 60)
            timestamp_text = f"{stamp}{minute:02d}:{second:02d}.{millis:03d}Z"
            record_id = f"{prefix}{serial:020x}"
            if failed:
                error_type, status_code, _, message = rng.choices(ERRORS, weights=error_weights)[0]
                output_tokens = 0
                input_tokens = 0 if status_code in (401, 429) else input_tokens
                ttfb = latency = int(rng.lognormvariate(math.log(ttfb_median * 0.6), 0.7))
                if error_type == "timeout":
                    ttfb = latency = 600_000
                stream = stream and status_code >= 500
                error_body = {"type": error_type, "message": message}
                if redacted:
                    error_body.pop("message")
                response = _dumps({"type": "error", "error": error_body} if anthropic else {"error": error_body})
                if stream:
                    response = response[:-1] + ',"streamed_data":[]}'
            else:
                error_type, status_code = None, 200
                output_tokens = max(1, int(rng.lognormvariate(5.3, 0.9)))
                ttfb = int(rng.lognormvariate(math.log(ttfb_median), 0.45))
                latency = ttfb + int(output_tokens * per_token * rng.uniform(0.7, 1.4))
                if anthropic:
                    usage = f'"usage":{{"input_tokens":{input_tokens},"output_tokens":{output_tokens}}}'
                else:
                    usage = (
                        f'"usage":{{"prompt_tokens":{input_tokens},"completion_tokens":{output_tokens},'
                        f'"total_tokens":{input_tokens + output_tokens}}}'
                    )
                if redacted:
                    response = f'{{"id":"resp-{record_id[-8:]}","model":"{model}",{usage},"content":"[redacted]"'
                    response += ',"streamed_data":[]}' if stream else "}"
                else:
                    head, chunks = fragments.answer(model=model, anthropic=anthropic, prompt=prompt, stream=stream)
                    response = f"{head},{usage}"
                    response += f',"streamed_data":[{chunks},{{{usage}}}]}}' if stream else "}"
            cost = round((input_tokens * price_in + output_tokens * price_out) / 1e6, 10)
            provider_latency = max(1, latency - rng.randint(1, 6)) if latency else None
            path = "/v1/messages" if anthropic else "/v1/chat/completions"
            request = fragments.request(
                model=model, anthropic=anthropic, prompt=prompt, stream=stream, redacted=redacted
            )
            status = "error" if failed else "success"
            thread_id = f"thr_{user.user_id.split('@')[0]}_{serial % 97}"
            # Two deployments per provider, as a model group spreads its traffic.
            deployment = f"{provider}-{'eu' if serial % 3 else 'us'}"
            log_data = (
                f'{{"timestamp":"{timestamp_text}","resource":{resource},"name":"ai_gateway_request_log",'
                f'"attributes":{{"id":"{record_id}","thread_id":"{thread_id}","org_id":"{org.slug}",'
                f'"user_id":"{user.user_id}","project_id":"{project}",'
                f'"experiment_id":{_json_str(experiment)},"provider":"{provider}","model":"{model}",'
                f'"trace_id":null,"span_id":null,"request":{request},"response":{response},'
                f'"metadata":{{"project_id":"{project}","project_name":"{project}","latency":{latency},'
                f'"ttfb":{ttfb},"tokens":{{"input":{input_tokens},"output":{output_tokens},'
                f'"total":{input_tokens + output_tokens}}},"cost":{cost},"status":"{status}","path":"{path}",'
                f'"method":"POST","request_size":{len(request)},"response_size":{len(response)},'
                f'"provider_latency":{_json_num(provider_latency)},"status_code":{status_code},'
                f'"provider_status_code":{status_code},"error_count":{int(failed)},'
                f'"error_type":{_json_str(error_type)},"provider_error_count":{int(failed)},'
                f'"provider_error_type":{_json_str(error_type)},"provider_request_id":null,'
                f'"upstream_model":null,"deployment":"{deployment}","stream":{"true" if stream else "false"},'
                f'"streamed_data_truncated":false,"client_disconnected":false,'
                f'"content_redacted":{"true" if redacted else "false"}}}}}}}'
            )
            yield orjson.loads(log_data)


def _json_str(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'


def _json_num(value) -> str:
    return "null" if value is None else str(value)
