"""Reads for the sessions pages: an org's conversation threads from the per-thread rollup, and
one thread's requests (through `telemetry.threads`) read as a conversation.

The list never reads the raw log; the thread page reads one page of its rows, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db.models import Exists, OuterRef

from dashboards.conversation import Conversation, conversation_from
from dashboards.models import ThreadUsage, ThreadUser
from dashboards.selectors import Window
from proxy.models import Organisation, Project
from telemetry import threads
from telemetry.models import RequestLog

SESSIONS_PAGE_SIZE = 50
# A thread's requests carry their whole documents: a page of them is kept short.
THREAD_PAGE_SIZE = 20
# Users named on a row of the list; the rest are counted.
USERS_SHOWN = 3
# Counting matching threads stops here: enough to say "1,000+" without walking every thread.
COUNT_LIMIT = 1_000
SORTS = {
    "recent": ("-last_at", "thread_id"),
    "cost": ("-cost", "-last_at", "thread_id"),
    "requests": ("-requests", "-last_at", "thread_id"),
    "errors": ("-errors", "-last_at", "thread_id"),
}


@dataclass(frozen=True)
class SessionFilters:
    project_id: str = ""
    user_id: str = ""
    errors_only: bool = False
    # A prefix of the thread id.
    search: str = ""
    sort: str = "recent"


@dataclass
class SessionRow:
    thread: ThreadUsage
    user_ids: list[str] = field(default_factory=list)

    @property
    def more_users(self) -> int:
        return max(0, self.thread.users - len(self.user_ids))

    @property
    def total_tokens(self) -> int:
        return self.thread.input_tokens + self.thread.output_tokens


@dataclass
class SessionPage:
    rows: list[SessionRow]
    count: int
    count_capped: bool
    page: int
    has_next: bool


def session_list(
    *, org_id: str, window: Window, filters: SessionFilters, page: int = 1, page_size: int = SESSIONS_PAGE_SIZE
) -> SessionPage:
    """The org's threads active in `window` (some request in it), latest activity first unless sorted otherwise."""
    threads_in = ThreadUsage.objects.filter(org_id=org_id, last_at__gte=window.since, first_at__lt=window.until)
    if filters.project_id:
        threads_in = threads_in.filter(project_id=filters.project_id)
    if filters.user_id:
        seen = ThreadUser.objects.filter(
            org_id=OuterRef("org_id"),
            project_id=OuterRef("project_id"),
            thread_id=OuterRef("thread_id"),
            user_id=filters.user_id,
        )
        threads_in = threads_in.filter(Exists(seen))
    if filters.errors_only:
        threads_in = threads_in.filter(errors__gt=0)
    if filters.search:
        threads_in = threads_in.filter(thread_id__startswith=filters.search)
    count = threads_in.values("pk")[: COUNT_LIMIT + 1].count()
    page = max(1, page)
    start = (page - 1) * page_size
    found = list(threads_in.order_by(*SORTS.get(filters.sort, SORTS["recent"]))[start : start + page_size + 1])
    rows = [SessionRow(thread=thread) for thread in found[:page_size]]
    _add_users(rows, org_id=org_id)
    return SessionPage(
        rows=rows,
        count=min(count, COUNT_LIMIT),
        count_capped=count > COUNT_LIMIT,
        page=page,
        has_next=len(found) > page_size,
    )


def _add_users(rows: list[SessionRow], *, org_id: str) -> None:
    by_key = {(row.thread.project_id, row.thread.thread_id): row for row in rows}
    if not by_key:
        return
    # Both lists go into one scan of the unique key; the few pairs not on the page are skipped.
    seen = ThreadUser.objects.filter(
        org_id=org_id,
        project_id__in={project_id for project_id, _ in by_key},
        thread_id__in={thread_id for _, thread_id in by_key},
    ).order_by("user_id")
    for project_id, thread_id, user_id in seen.values_list("project_id", "thread_id", "user_id"):
        row = by_key.get((project_id, thread_id))
        if row is not None and len(row.user_ids) < USERS_SHOWN:
            row.user_ids.append(user_id)


def session_projects(*, org_id: str) -> list[str]:
    """The org's projects, for the list's filter: read from the few project rows, not the many threads."""
    return list(Project.objects.filter(org__slug=org_id).order_by("slug").values_list("slug", flat=True))


@dataclass
class ThreadSummary:
    thread_id: str
    project_ids: list[str]
    first_at: datetime | None
    last_at: datetime | None
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: Decimal
    users: list[str]


def thread_summary(*, org_id: str, thread_id: str, project_id: str | None = None) -> ThreadSummary | None:
    """The thread's totals from the rollup, over its projects (or the one given); None if it has none."""
    rollup = ThreadUsage.objects.filter(org_id=org_id, thread_id=thread_id)
    if project_id is not None:
        rollup = rollup.filter(project_id=project_id)
    found = list(rollup.order_by("project_id"))
    if not found:
        return None
    users = ThreadUser.objects.filter(org_id=org_id, thread_id=thread_id)
    if project_id is not None:
        users = users.filter(project_id=project_id)
    return ThreadSummary(
        thread_id=thread_id,
        project_ids=[row.project_id for row in found],
        first_at=min(row.first_at for row in found),
        last_at=max(row.last_at for row in found),
        requests=sum(row.requests for row in found),
        errors=sum(row.errors for row in found),
        input_tokens=sum(row.input_tokens for row in found),
        output_tokens=sum(row.output_tokens for row in found),
        cost=sum((row.cost for row in found), Decimal(0)),
        users=sorted(set(users.values_list("user_id", flat=True)[:100])),
    )


@dataclass
class ThreadEntry:
    """One request of a thread, with what it added to the conversation and its reply."""

    log: RequestLog
    conversation: Conversation | None
    # The request's own turns shown: the whole prompt for the thread's first request, the new
    # turns for the others (a chat request repeats the history before them).
    shown_turns: list = field(default_factory=list)


@dataclass
class ThreadView:
    entries: list[ThreadEntry]
    after: tuple[datetime, str] | None


def thread_view(
    *,
    org: Organisation,
    thread_id: str,
    project_id: str | None,
    after: tuple[datetime, str] | None,
    content_visible: bool,
    page_size: int = THREAD_PAGE_SIZE,
) -> ThreadView:
    page = threads.thread_requests(
        org_id=org.slug, thread_id=thread_id, project_id=project_id, after=after, limit=page_size
    )
    entries = []
    for index, log in enumerate(page.requests):
        conversation = request_conversation(log, content_visible=content_visible)
        entry = ThreadEntry(log=log, conversation=conversation)
        if conversation is not None:
            first = index == 0 and after is None
            entry.shown_turns = conversation.request_turns if first else conversation.new_request_turns
        entries.append(entry)
    return ThreadView(entries=entries, after=page.after)


def request_conversation(log: RequestLog, *, content_visible: bool) -> Conversation | None:
    """The conversation in one request log; None when its content may not be shown or is none."""
    if not content_visible:
        return None
    document = log.log_data if isinstance(log.log_data, dict) else {}
    attributes = document.get("attributes") if isinstance(document.get("attributes"), dict) else {}
    # The body is as the client sent it: its path, not the provider, tells the dialect.
    dialect = "anthropic" if (log.path or "").endswith("/messages") else None
    request, response = attributes.get("request"), attributes.get("response")
    return conversation_from(request, response, path=log.path or "", dialect=dialect)
