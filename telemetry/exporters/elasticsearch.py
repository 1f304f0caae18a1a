"""The Elasticsearch exporter: request logs into daily indices `<index>-YYYY.MM.DD`.

Each document goes to the index of its own timestamp's UTC day, with `_id` = the record id
and `op_type: create`, so a retried batch meets its earlier copies as 409 conflicts, which
count as success: one copy, however often a batch is sent. The alias `<index>` (exactly
ELASTICSEARCH_INDEX) covers every daily index, so `GET <index>/_search` searches them all,
as do the patterns `<index>-*` and `<index>*`: one document per request under each.

Mapping (a composable index template for `<index>-*`, installed once per process and
configuration):

- every field of the document except the payloads has an explicit type (keyword ids,
  long/double numbers, a date timestamp, booleans), and the mapping is `dynamic: false`:
  a field the template does not know is kept in `_source` but never indexed, so a new
  field can never make later documents fail;
- `attributes.request` and `attributes.response` are free-form (any provider's payload,
  a string when redacted, a list of stream chunks) and are mapped `enabled: false`: kept
  verbatim in `_source`, never parsed, so no payload can ever cause a mapping conflict.
  (`flattened` would index them as keywords, but OpenSearch lacks it, and keywords are
  no use for searching words in a conversation.)

The stored `_source` is exactly the record, so nothing can be added to it for search.
Full-text search over the payloads has its own companion documents instead, in
`text-<index>-YYYY.MM.DD` (same `_id`): the record's id, org, project, user and timestamp
plus `attributes.request_text` / `attributes.response_text`, the strings found in the
payloads, as text fields. The companions' names do not start with `<index>`, so neither
`<index>*` nor the alias ever finds a request twice. (Indexing the text in the record's own
document, kept out of `_source` with `_source.excludes`, would make one document; but
compatible servers rewrite the stored `_source` when excluding from it, and it stops being
exactly the record.) Earlier versions named the companions `<index>_text-*`, which
`<index>*` matched: their template and indices are removed when the exporter first writes.

Repricing (`replace`): the record and its companion are indexed again whole, over the
stored copies.

Retention: with `retention_days`, an ILM policy deletes indices that old. Clusters without
ILM (OpenSearch and compatible servers) are pruned by the exporter instead: it deletes
daily indices past retention, at most once a day per process.

`plain_json`: the 8.x client sends `application/vnd.elasticsearch+json; compatible-with=8`,
which Elasticsearch 7, OpenSearch and osmem-server refuse (406). Its headers are rewritten
after that conversion, so neither client-wide `headers=` nor `options(headers=...)` can
undo it; the transport's node class is the one place that sees the final headers, and
`PlainJsonNode` sends plain `application/json` / `application/x-ndjson` from there.

Failures: a document the cluster refuses (HTTP 400 for that item: a value that does not
fit its field) fails for good and goes to dead letters; anything else (connection refused,
timeouts, 429, 5xx, or a whole request refused) leaves the documents to be retried.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta

from elastic_transport import HttpHeaders, Urllib3HttpNode
from elasticsearch import ApiError, Elasticsearch, SerializationError, TransportError
from elasticsearch.dsl import Boolean, Date, Double, Index, InnerDoc, Integer, Keyword, Long, Mapping, Object, Text
from elasticsearch.helpers import streaming_bulk
from elasticsearch.serializer import OrjsonSerializer

from telemetry.exporters.base import Exporter, ExportError, ExportResult, parse_timestamp, record_id
from telemetry.storable import storable_text

logger = logging.getLogger(__name__)

# Enough text for a search to match; the whole payload is in _source regardless.
SEARCH_TEXT_LIMIT = 32 * 1024
TEMPLATE_PRIORITY = 200
_MAX_CHUNK_BYTES = 10 * 1024 * 1024
_PRUNE_EVERY = 24 * 3600
_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]*$")
_COMPAT_MIMETYPE = re.compile(r"application/vnd\.elasticsearch\+([a-z-]+);\s*compatible-with=\d+")


class PlainJsonNode(Urllib3HttpNode):
    """Sends plain JSON media types where the 8.x client asks for its compatibility mode."""

    def perform_request(self, method, target, body=None, headers=None, **kwargs):
        if headers:
            headers = HttpHeaders(headers)
            for name in ("accept", "content-type"):
                if value := headers.get(name):
                    headers[name] = _COMPAT_MIMETYPE.sub(r"application/\1", value)
        return super().perform_request(method, target, body=body, headers=headers, **kwargs)


# --- Index templates -----------------------------------------------------------------


class Tokens(InnerDoc):
    input = Long()
    output = Long()
    total = Long()
    cache_read = Long()
    cache_write = Long()
    reasoning = Long()


class Attempt(InnerDoc):
    deployment = Keyword()
    provider = Keyword()
    status = Integer()
    error = Keyword()
    latency_ms = Long()


class Metadata(InnerDoc):
    project_id = Keyword()
    project_name = Keyword()
    latency = Long()
    ttfb = Long()
    tokens = Object(Tokens)
    cost = Double()
    cost_unknown = Boolean()
    truncated_fields = Keyword()
    status = Keyword()
    path = Keyword()
    method = Keyword()
    request_size = Long()
    response_size = Long()
    provider_latency = Long()
    status_code = Integer()
    provider_status_code = Integer()
    error_count = Integer()
    error_type = Keyword()
    provider_error_count = Integer()
    provider_error_type = Keyword()
    provider_request_id = Keyword()
    upstream_model = Keyword()
    stream = Boolean()
    streamed_data_truncated = Boolean()
    client_disconnected = Boolean()
    content_redacted = Boolean()
    usage_estimated = Boolean()
    error_message = Text()
    model_group = Keyword()
    deployment = Keyword()
    fallback_used = Boolean()
    attempts = Object(Attempt)


class Attributes(InnerDoc):
    id = Keyword()
    thread_id = Keyword()
    org_id = Keyword()
    user_id = Keyword()
    project_id = Keyword()
    experiment_id = Keyword()
    provider = Keyword()
    model = Keyword()
    trace_id = Keyword()
    span_id = Keyword()
    request = Object(enabled=False)
    response = Object(enabled=False)
    metadata = Object(Metadata)


class SearchAttributes(InnerDoc):
    id = Keyword()
    org_id = Keyword()
    project_id = Keyword()
    user_id = Keyword()
    request_text = Text()
    response_text = Text()


SEARCH_FIELDS = ("attributes.request_text", "attributes.response_text")


def _template(
    pattern: str, mapping: Mapping, *, refresh_interval: float, lifecycle_policy: str | None, alias: str | None = None
) -> dict:
    template = Index(pattern)
    template.mapping(mapping)
    if alias:
        template.aliases(**{alias: {}})
    if refresh_interval > 0:
        template.settings(refresh_interval=f"{round(refresh_interval * 1000)}ms")
    if lifecycle_policy:
        template.settings(**{"lifecycle.name": lifecycle_policy})
    return template.to_dict()


def record_template(
    index: str, *, refresh_interval: float = 1.0, lifecycle_policy: str | None = None, alias: bool = True
) -> dict:
    """The `template` part of the composable template for the record indices `<index>-*`, aliased `<index>`."""
    mapping = Mapping()
    mapping.meta("dynamic", False)
    mapping.field("timestamp", Date())
    mapping.field(
        "resource",
        Object(
            properties={
                "service": Object(properties={"name": Keyword(), "version": Keyword()}),
                "deployment": Object(properties={"environment": Keyword()}),
            }
        ),
    )
    mapping.field("name", Keyword())
    mapping.field("attributes", Object(Attributes))
    return _template(
        f"{index}-*",
        mapping,
        refresh_interval=refresh_interval,
        lifecycle_policy=lifecycle_policy,
        alias=index if alias else None,
    )


def search_template(index: str, *, refresh_interval: float = 1.0, lifecycle_policy: str | None = None) -> dict:
    """The template for the companion search indices `text-<index>-*`."""
    mapping = Mapping()
    mapping.meta("dynamic", False)
    # The text is only for matching; a hit's id and timestamp are all a search reads back.
    mapping.meta("_source", excludes=list(SEARCH_FIELDS))
    mapping.field("timestamp", Date())
    mapping.field("attributes", Object(SearchAttributes))
    return _template(
        f"{search_index_prefix(index)}-*", mapping, refresh_interval=refresh_interval, lifecycle_policy=lifecycle_policy
    )


def search_index_prefix(index: str) -> str:
    """The companions' prefix: one that `<index>*` does not match."""
    return f"text-{index}"


def search_text(value, *, skip: str | None = None) -> str:
    """The strings in a free-form payload, joined, for a full-text field."""
    parts: list[str] = []
    size = 0
    stack = [value]
    while stack and size < SEARCH_TEXT_LIMIT:
        item = stack.pop()
        if isinstance(item, str):
            parts.append(item)
            size += len(item) + 1
        elif isinstance(item, dict):
            stack.extend(reversed([v for k, v in item.items() if k != skip]))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return "\n".join(parts)[:SEARCH_TEXT_LIMIT]


def search_document(document: dict) -> dict | None:
    """The companion search document of a record, or None when its payloads hold no text."""
    attributes = document["attributes"]
    # The accumulated response already holds what the stream chunks say.
    request_text = search_text(attributes.get("request"))
    response_text = search_text(attributes.get("response"), skip="streamed_data")
    if not request_text and not response_text:
        return None
    return {
        "timestamp": document["timestamp"],
        "attributes": {
            "id": attributes["id"],
            "org_id": attributes.get("org_id"),
            "project_id": attributes.get("project_id"),
            "user_id": attributes.get("user_id"),
            "request_text": request_text,
            "response_text": response_text,
        },
    }


# --- The exporter --------------------------------------------------------------------


class ElasticsearchExporter(Exporter):
    target_option = "index"

    def __init__(
        self,
        name: str,
        *,
        url: str,
        index: str = "ai-gateway-metrics",
        username: str = "",
        password: str = "",
        api_key: str = "",
        ca_certs: str = "",
        verify_certs: bool = True,
        plain_json: bool = False,
        retention_days: int = 0,
        search_text: bool = True,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        request_timeout: float = 30.0,
    ):
        super().__init__(name)
        if not _INDEX_NAME.match(index):
            raise ValueError(f"not a valid index name (lowercase, no wildcards): {index!r}")
        self.url = url
        self.index = index
        self.search_index = search_index_prefix(index) if search_text else None
        self.retention_days = int(retention_days)
        self.batch_size = int(batch_size)
        self.flush_interval = float(flush_interval)
        options: dict = {
            "request_timeout": request_timeout,
            # Retries belong to the export task, which backs off; here a failure should surface at once.
            "max_retries": 0,
            "retry_on_timeout": False,
            "serializer": OrjsonSerializer(),
        }
        if api_key:
            options["api_key"] = api_key
        elif username:
            options["basic_auth"] = (username, password)
        if ca_certs:
            options["ca_certs"] = ca_certs
        if not verify_certs:
            options |= {"verify_certs": False, "ssl_show_warn": False}
        if plain_json:
            options["node_class"] = PlainJsonNode
        self.client = Elasticsearch(url, **options)
        self._prepared = False
        self._lifecycle_policy: str | None = None
        self._pruned_at = float("-inf")

    @property
    def families(self) -> list[str]:
        """The prefixes of the daily indices this exporter writes."""
        return [self.index, *([self.search_index] if self.search_index else [])]

    def index_for(self, document: dict, family: str | None = None) -> str:
        return f"{family or self.index}-{parse_timestamp(document.get('timestamp')):%Y.%m.%d}"

    def export(self, batch: list[dict]) -> ExportResult:
        return self._write(batch, op_type="create")

    def replace(self, batch: list[dict]) -> ExportResult:
        """Index the documents again whole, over their stored copies (after a repricing)."""
        return self._write(batch, op_type="index")

    def _write(self, batch: list[dict], *, op_type: str) -> ExportResult:
        result = ExportResult()
        records, companions = [], {}
        seen = set()
        for document in batch:
            rid = record_id(document)
            if rid in seen:
                continue
            seen.add(rid)
            if rid.startswith("sha1:"):
                result.failed[rid] = "document has no attributes.id"
                continue
            document = storable_text(document)
            try:
                records.append(_action(op_type, self.index_for(document), rid, document))
                companion = search_document(document) if self.search_index else None
            except (KeyError, TypeError, ValueError) as exc:
                result.failed[rid] = f"does not fit the index: {exc}"
                continue
            if companion is not None:
                companions[rid] = _action(op_type, self.index_for(document, self.search_index), rid, companion)
        if not records:
            return result
        try:
            self._prepare()
            stored = self._bulk(records, result)
            # Search documents only for stored records, so that a search never finds a record that is not there.
            searchable = [companions[rid] for rid in stored if rid in companions]
            if searchable:
                self._bulk_search(searchable, stored, result)
            result.succeeded.extend(stored)
        except (ApiError, TransportError) as exc:
            # The cluster may be a different one when it comes back: install the templates again.
            self._prepared = False
            return ExportResult.batch_failed(batch, _describe_exception(exc), done=result)
        return result

    def check(self) -> str:
        try:
            info = self.client.info()
        except (ApiError, TransportError) as exc:
            raise ExportError(_describe_exception(exc)) from exc
        version = info.get("version", {})
        product = version.get("distribution", "elasticsearch")
        return f"{product} {version.get('number', '?')} at {self.url}, indices {self.index}-*"

    @property
    def location(self) -> str:
        return self.url

    def shutdown(self) -> None:
        self.client.close()

    # --- Bulk ---------------------------------------------------------------------------

    def _bulk(self, actions: list[dict], result: ExportResult) -> list[str]:
        """Send the actions; returns the ids stored, and enters the others in `result`."""
        stored = []
        try:
            outcomes = streaming_bulk(
                self.client,
                actions,
                chunk_size=self.batch_size,
                max_chunk_bytes=_MAX_CHUNK_BYTES,
                raise_on_error=False,
                raise_on_exception=False,
                max_retries=0,
            )
            for ok, item in outcomes:
                ((_, info),) = item.items()
                rid = info.get("_id")
                status = info.get("status", 500)
                if ok or status == 409:
                    stored.append(rid)
                elif status == 400 and "exception" not in info:
                    # The cluster's verdict on this one document, not on the request.
                    result.failed[rid] = _describe_item_error(status, info.get("error"))
                else:
                    result.retry.append(rid)
                    result.transient_error = result.transient_error or _describe_item_error(status, info.get("error"))
        except SerializationError:
            # Nothing of the failing chunk was sent: sort out the documents that cannot be written as JSON.
            settled = set(stored) | set(result.failed) | set(result.retry)
            return stored + self._bulk_serialisable([a for a in actions if a["_id"] not in settled], result)
        return stored

    def _bulk_serialisable(self, actions: list[dict], result: ExportResult) -> list[str]:
        sendable = []
        for action in actions:
            try:
                self.client.transport.serializers.dumps(action["_source"], mimetype="application/json")
            except SerializationError as exc:
                result.failed[action["_id"]] = f"cannot be serialised as JSON: {exc}"
            else:
                sendable.append(action)
        return self._bulk(sendable, result) if sendable else []

    def _bulk_search(self, actions: list[dict], stored: list[str], result: ExportResult) -> None:
        outcome = ExportResult()
        self._bulk(actions, outcome)
        for rid, error in outcome.failed.items():
            # The record itself is stored; only its words will not be found.
            logger.warning("telemetry: search document for %s refused: %s", rid, error)
        if outcome.retry:
            # Sent again with its record, which then meets itself as a conflict.
            retry = set(outcome.retry)
            stored[:] = [rid for rid in stored if rid not in retry]
            result.retry.extend(outcome.retry)
            result.transient_error = result.transient_error or outcome.transient_error

    # --- Templates, lifecycle, pruning --------------------------------------------------

    def _prepare(self) -> None:
        if self._prepared:
            self._maybe_prune()
            return
        if self.retention_days > 0:
            self._lifecycle_policy = self._install_lifecycle_policy()
        options = {"refresh_interval": self.flush_interval, "lifecycle_policy": self._lifecycle_policy}
        # An index of that very name (made by hand, say) would make every new daily index fail on the alias.
        aliased = not self._index_named_like_the_alias()
        self._install_template(self.index, f"{self.index}-*", record_template(self.index, **options, alias=aliased))
        if self.search_index:
            self._install_template(self.search_index, f"{self.search_index}-*", search_template(self.index, **options))
        if aliased:
            self._alias_existing_indices()
        self._remove_legacy_companions()
        self._prepared = True
        self._maybe_prune()

    def _index_named_like_the_alias(self) -> bool:
        try:
            found = self.client.indices.get(index=self.index, ignore_unavailable=True, allow_no_indices=True)
        except ApiError as exc:
            if exc.status_code == 404:
                return False
            raise
        if self.index in found:
            logger.error(
                "telemetry: an index named %s exists, so no alias of that name covers the daily indices", self.index
            )
            return True
        return False

    def _alias_existing_indices(self) -> None:
        """Daily indices created before the template had its alias get it too."""
        try:
            if self.client.indices.get(index=f"{self.index}-*", allow_no_indices=True, expand_wildcards="open"):
                self.client.indices.put_alias(index=f"{self.index}-*", name=self.index)
        except ApiError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                raise
            logger.error("telemetry: alias %s was refused: %s", self.index, _describe_exception(exc))

    def _remove_legacy_companions(self) -> None:
        """Drop the `<index>_text-*` companions of earlier versions, which doubled every hit under `<index>*`."""
        legacy = f"{self.index}_text"
        try:
            names = list(self.client.indices.get(index=f"{legacy}-*", allow_no_indices=True, expand_wildcards="all"))
            for name in names:
                self.client.indices.delete(index=name)
            if names:
                logger.info("telemetry: removed %d companion search indices %s-*", len(names), legacy)
            self.client.indices.delete_index_template(name=legacy)
        except ApiError as exc:
            if exc.status_code == 404:
                return
            if exc.status_code == 429 or exc.status_code >= 500:
                raise
            logger.error("telemetry: companion indices %s-* could not be removed: %s", legacy, _describe_exception(exc))

    def _install_template(self, name: str, pattern: str, body: dict) -> None:
        try:
            self.client.indices.put_index_template(
                name=name,
                index_patterns=[pattern],
                template=body,
                priority=TEMPLATE_PRIORITY,
                meta={"managed_by": "tollgate"},
            )
        except ApiError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                raise
            # Not worth holding records back for: they are stored, only less well mapped.
            logger.error("telemetry: index template %s was refused: %s", name, _describe_exception(exc))

    def _install_lifecycle_policy(self) -> str | None:
        name = f"{self.index}-retention"
        policy = {
            "phases": {
                "hot": {"actions": {}},
                "delete": {"min_age": f"{self.retention_days}d", "actions": {"delete": {}}},
            }
        }
        try:
            self.client.ilm.put_lifecycle(name=name, policy=policy)
        except ApiError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                raise
            logger.info("telemetry: no ILM on %s (%s); pruning old indices instead", self.url, exc.status_code)
            return None
        return name

    def _maybe_prune(self) -> None:
        if self.retention_days <= 0 or self._lifecycle_policy or time.monotonic() - self._pruned_at < _PRUNE_EVERY:
            return
        self._pruned_at = time.monotonic()
        self.prune_expired_indices()

    def prune_expired_indices(self, *, now: datetime | None = None) -> list[str]:
        """Delete this exporter's daily indices older than retention_days; returns their names."""
        cutoff = (now or datetime.now(UTC)).date() - timedelta(days=self.retention_days)
        expired = []
        for family in self.families:
            pattern = re.compile(rf"^{re.escape(family)}-(\d{{4}}\.\d{{2}}\.\d{{2}})$")
            for name in self.client.indices.get(index=f"{family}-*", expand_wildcards="open,closed"):
                match = pattern.match(name)
                if not match:
                    continue
                try:
                    day = datetime.strptime(match.group(1), "%Y.%m.%d").date()
                except ValueError:
                    continue
                if day < cutoff:
                    expired.append(name)
        for name in expired:
            self.client.indices.delete(index=name)
            logger.info("telemetry: deleted index %s, past %d days of retention", name, self.retention_days)
        return expired


def _action(op_type: str, index: str, rid: str, source: dict) -> dict:
    return {"_op_type": op_type, "_index": index, "_id": rid, "_source": source}


def _describe_item_error(status: int, error) -> str:
    if isinstance(error, dict):
        reason = error.get("reason", "")
        caused_by = error.get("caused_by")
        if isinstance(caused_by, dict) and caused_by.get("reason"):
            reason = f"{reason} ({caused_by['reason']})"
        return f"{status} {error.get('type', 'error')}: {reason}"
    return f"{status} {error}"


def _describe_exception(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.status_code} {exc.message}"
    return f"{type(exc).__name__}: {exc}"
