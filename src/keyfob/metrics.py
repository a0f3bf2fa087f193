"""Prometheus metrics: one registry per app, fed from the proxy and the audit commits.

Two feeds, both cheap on the hot path:

- the proxy calls ``ProxyMetrics.done`` once per exchange; counter and histogram
  children are bound once per label tuple and kept, so a request costs a dict look-up
  and an increment, no label dict;
- every committed audit record passes ``Metrics.committed``: lease mints, denials,
  failed authentications, credential refreshes and budget stream cuts are counted from
  what was durably recorded (so the counts can never show an access the audit log does
  not), and the commit's latency is observed.

No label carries a token, lease, secret or anything a client typed: the set label is
the path of a set that exists (a refused request has ``set="none"``), and a reason
label is the audit record's reason only when it is a plain identifier.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig

CONTENT_TYPE = CONTENT_TYPE_LATEST
NO_SET = "none"
CHILDREN_KEPT = 4096
_REASON = re.compile(r"[a-z][a-z0-9_]{0,47}")
# Seconds: a local upstream answers in a millisecond, a model's first token in seconds.
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# keyfob's own share: lease check, audit commit, decryption, injection; sub-millisecond
# to a few milliseconds when healthy.
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)

# FastAPI (0.142 and later) records spans, metrics and logs of its own as soon as an
# OpenTelemetry SDK is configured in the process (auto-instrumentation does that): an
# unhandled exception with its message and stack trace (keyfob's 500 handler logs only
# its type and file:line), and the query string. keyfob's apps turn it off; what keyfob
# reports is these metrics and the audit log, neither of which ever carries a value.
FASTAPI_TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


class Exchange(Protocol):
    """What the proxy knows of one exchange when it ends."""

    status: int | None
    error: str | None
    started: bool
    set_path: str | None
    began_at: float
    upstream_s: float | None
    first_byte_at: float | None


class _Audited(Protocol):
    @property
    def action(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def details(self) -> dict[str, Any]: ...


def _reason(value: Any) -> str:
    """A reason fit for a label: a plain identifier, else ``other``."""
    return value if isinstance(value, str) and _REASON.fullmatch(value) else "other"


def _status_class(status: int | None) -> str:
    return f"{status // 100}xx" if status else "none"


class ProxyMetrics:
    """The proxy's counters; ``open`` is the number of exchanges in flight."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = 0
        self._requests = Counter(
            "keyfob_proxy_requests",
            "Proxied requests by set, status class and outcome.",
            ["set", "status_class", "outcome"],
            registry=registry,
        )
        self._upstream = Histogram(
            "keyfob_proxy_upstream_seconds",
            "Time from sending the upstream request to its response headers.",
            ["set"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self._overhead = Histogram(
            "keyfob_proxy_overhead_seconds",
            "Latency keyfob adds: time to the agent's first response byte minus the upstream's.",
            buckets=OVERHEAD_BUCKETS,
            registry=registry,
        )
        gauge = Gauge(
            "keyfob_proxy_open_streams",
            "Proxied exchanges in flight (request received, response not finished).",
            registry=registry,
        )
        gauge.set_function(lambda: self.open)
        self._counts: dict[tuple[str, str, str], Any] = {}
        self._latencies: dict[str, Any] = {}

    def done(self, ex: Exchange) -> None:
        """Count one finished exchange (called once, whatever happened)."""
        set_label = ex.set_path or NO_SET
        outcome = _outcome(ex)
        key = (set_label, _status_class(ex.status), outcome)
        child = self._counts.get(key)
        if child is None:
            child = self._requests.labels(*key)
            if len(self._counts) < CHILDREN_KEPT:
                self._counts[key] = child
        child.inc()
        if ex.upstream_s is None:
            return
        histogram = self._latencies.get(set_label)
        if histogram is None:
            histogram = self._upstream.labels(set_label)
            if len(self._latencies) < CHILDREN_KEPT:
                self._latencies[set_label] = histogram
        histogram.observe(ex.upstream_s)
        if ex.first_byte_at is not None:
            self._overhead.observe(max(0.0, ex.first_byte_at - ex.began_at - ex.upstream_s))


def _outcome(ex: Exchange) -> str:
    if ex.set_path is None:
        return "refused"  # nothing was used: a bad request or a lease that was refused
    if ex.error is None and ex.status is not None:
        return "ok"
    if ex.error == "client_disconnected":
        return "client_gone"
    return "aborted" if ex.started else "error"


class Metrics:
    """The registry keyfob serves at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.proxy = ProxyMetrics(self.registry)
        self._mints = Counter("keyfob_lease_mints", "Leases minted.", registry=self.registry)
        self._pruned = Counter(
            "keyfob_leases_pruned",
            "Leases deleted past their retention (KEYFOB_LEASE_RETENTION_DAYS).",
            registry=self.registry,
        )
        self._denials = Counter(
            "keyfob_lease_denials",
            "Lease mints and uses refused, by stage (mint, use) and reason.",
            ["stage", "reason"],
            registry=self.registry,
        )
        self._auth_failures = Counter(
            "keyfob_auth_failures",
            "Failed authentications (missing, malformed, unknown or disabled tokens).",
            ["reason"],
            registry=self.registry,
        )
        self._records = Counter(
            "keyfob_audit_records", "Audit records committed.", registry=self.registry
        )
        self._commit = Histogram(
            "keyfob_audit_commit_seconds",
            "Time to commit a write transaction with its audit records (grouped commits "
            "included: one observation per commit).",
            buckets=COMMIT_BUCKETS,
            registry=self.registry,
        )
        self._queue = Gauge(
            "keyfob_audit_queue_depth",
            "Lease uses, mints and outcome records waiting for the next grouped commit.",
            registry=self.registry,
        )
        self._queue.set(0)
        self._refreshes = Counter(
            "keyfob_credential_refreshes",
            "OAuth and service-account tokens fetched, by grant type and result (ok, "
            "error, reconnect_needed).",
            ["grant", "result"],
            registry=self.registry,
        )
        self._cuts = Counter(
            "keyfob_budget_stream_cuts",
            "Streamed answers cut at what their budget reservation allowed.",
            registry=self.registry,
        )
        self._flagged = Counter(
            "keyfob_usage_flagged",
            "Metered requests whose upstream usage was missing or malformed (metered by "
            "requests and bytes instead).",
            ["flag"],
            registry=self.registry,
        )
        self._reasons: dict[tuple[str, ...], Any] = {}
        self._ship_lag = Gauge(
            "keyfob_audit_ship_lag_records",
            "Committed audit records a shipping sink (file, syslog, webhook) has not yet "
            "delivered, as this node last saw it.",
            ["sink"],
            registry=self.registry,
        )
        self._shipped = Counter(
            "keyfob_audit_shipped_records",
            "Audit records this node delivered to a shipping sink.",
            ["sink"],
            registry=self.registry,
        )
        self._ship_failures = Counter(
            "keyfob_audit_ship_failures",
            "Failed deliveries to a shipping sink (each is retried).",
            ["sink"],
            registry=self.registry,
        )

    def ship_lag(self, sink: str, behind: int) -> None:
        self._ship_lag.labels(sink).set(behind)

    def shipped(self, sink: str, count: int, behind: int) -> None:
        self._shipped.labels(sink).inc(count)
        self._ship_lag.labels(sink).set(max(0, behind))

    def ship_failed(self, sink: str) -> None:
        self._ship_failures.labels(sink).inc()

    def queue_depth(self, read: Callable[[], int]) -> None:
        """Read the grouped commit's queue length at each scrape."""
        self._queue.set_function(read)

    def caches(self, dropped: Callable[[], dict[str, int]], up: Callable[[], bool]) -> None:
        """Read the node's cache drops (by notice topic) and listener state at each scrape."""
        self.registry.register(_CacheCollector(dropped, up))

    def committed(self, records: Iterable[_Audited], seconds: float) -> None:
        """Count the records of one commit and observe how long the commit took."""
        self._commit.observe(seconds)
        count = 0
        for record in records:
            count += 1
            action = record.action
            if action == "lease.mint":
                # A batch mint is one record for ``count`` leases.
                minted = record.details.get("count", 1)
                self._mints.inc(minted if isinstance(minted, int) and minted > 0 else 1)
            elif action == "lease.deny":
                details = record.details
                self._count(_reason(details.get("stage")), _reason(details.get("reason")))
            elif action == "auth.failed":
                self._count(_reason(record.details.get("reason")))
            elif action == "proxy.request":
                self._metered(record.details.get("usage"))
            elif action == "credential.refresh":
                result = "ok" if record.outcome == "ok" else "error"
                self._refreshes.labels(_reason(record.details.get("grant")), result).inc()
            elif action == "credential.reconnect_needed":
                grant = _reason(record.details.get("grant"))
                self._refreshes.labels(grant, "reconnect_needed").inc()
            elif action == "lease.prune":  # hourly at most, so tested last
                pruned = record.details.get("leases")
                if isinstance(pruned, int) and pruned > 0:
                    self._pruned.inc(pruned)
        self._records.inc(count)

    def _metered(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        if usage.get("cut") == "budget":
            self._cuts.inc()
        flag = usage.get("flagged")
        if flag is not None:
            self._flagged.labels(_reason(flag)).inc()

    def _count(self, *labels: str) -> None:
        child = self._reasons.get(labels)
        if child is None:
            if len(labels) == 2:
                child = self._denials.labels(*labels)
            else:
                child = self._auth_failures.labels(*labels)
            self._reasons[labels] = child
        child.inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class _CacheCollector:
    """``keyfob_cache_drops_total{topic}`` and ``keyfob_cache_listener_up``."""

    def __init__(self, dropped: Callable[[], dict[str, int]], up: Callable[[], bool]) -> None:
        self._dropped = dropped
        self._up = up

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        drops = CounterMetricFamily(
            "keyfob_cache_drops",
            "Caches this node dropped, by the notice that asked (reset: all of them, when "
            "notices may have been missed).",
            labels=["topic"],
        )
        for topic, count in sorted(self._dropped().items()):
            drops.add_metric([topic], count)
        yield drops
        yield GaugeMetricFamily(
            "keyfob_cache_listener_up",
            "1 while this node listens for other nodes' cache notices (PostgreSQL).",
            value=1 if self._up() else 0,
        )


def clock() -> float:
    """The clock the proxy's latencies are measured with."""
    return time.perf_counter()
