"""Prometheus metrics; multi-process safe when PROMETHEUS_MULTIPROC_DIR is set (serve --workers)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

REQUESTS: Final = Counter("connector_requests_total", "HTTP requests served",
                          ["route", "method", "status"])
VENDOR_SECONDS: Final = Histogram(
    "connector_vendor_call_seconds", "Vendor API call latency", ["vendor"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
VENDOR_OUTCOMES: Final = Counter("connector_vendor_outcomes_total",
                                 "Vendor send outcomes by class", ["vendor", "outcome"])
DEDUPE: Final = Counter("connector_dedupe_total",
                        "Repeated request_ids: answered from the store, after waiting for "
                        "an in-flight original, or timed out waiting", ["result"])
CALLBACKS: Final = Counter("connector_callbacks_total", "Vendor status callbacks by result",
                           ["vendor", "result"])
REPORT_ATTEMPTS: Final = Counter("connector_report_attempts_total",
                                 "Delivery-report events per POST attempt, by outcome",
                                 ["outcome"])
INBOUND: Final = Counter("connector_inbound_total", "Vendor inbound (MO) messages by result: "
                         "forwarded, duplicate (a vendor's retry), forbidden",
                         ["vendor", "result"])
DEAD_LETTERS: Final = Counter("connector_dead_letters_total",
                              "Delivery reports given up on")
REPLAYS: Final = Counter("connector_report_replays_total",
                         "Dead-lettered reports an operator queued for delivery again")


def _remember_children(*metrics: MetricWrapperBase) -> None:
    """`labels(...)` validates, locks and builds a key on every call (about eight Python calls;
    a message made some ten of them): answer repeats from a cache instead. Label values here
    are small closed sets (routes, vendors, outcome codes), so the cache stays small."""
    for metric in metrics:
        metric.labels = functools.lru_cache(maxsize=4096)(metric.labels)  # type: ignore[method-assign]


_remember_children(REQUESTS, VENDOR_SECONDS, VENDOR_OUTCOMES, DEDUPE, CALLBACKS, REPORT_ATTEMPTS)


class OutboxSnapshot:
    """Outbox gauges read from the store at scrape time, so every replica agrees."""

    def __init__(self) -> None:
        self.depth = 0
        self.oldest_age = 0.0
        self.dead = 0
        self.store_up = 1  # whether this scrape's read of the store answered

    def update(self, depth: int, oldest_created_at: float | None, dead: int) -> None:
        self.store_up = 1
        self.depth = depth
        self.oldest_age = 0.0 if oldest_created_at is None else time.time() - oldest_created_at
        self.dead = dead


class _OutboxCollector(Collector):
    def __init__(self, snapshot: OutboxSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("connector_outbox_depth", "Reports waiting to be delivered",
                                value=self.snapshot.depth)
        yield GaugeMetricFamily("connector_outbox_oldest_age_seconds",
                                "Age of the oldest undelivered report",
                                value=self.snapshot.oldest_age)
        yield GaugeMetricFamily("connector_outbox_dead", "Dead-lettered reports kept",
                                value=self.snapshot.dead)
        yield GaugeMetricFamily("connector_store_up",
                                "1 when the store answered this scrape's read, else 0",
                                value=self.snapshot.store_up)


def render(snapshot: OutboxSnapshot) -> tuple[bytes, str]:
    """The exposition text for one scrape, across every worker process when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counters = CollectorRegistry()
        multiprocess.MultiProcessCollector(counters)  # type: ignore[no-untyped-call]
    else:
        counters = REGISTRY
    gauges = CollectorRegistry()
    gauges.register(_OutboxCollector(snapshot))
    return generate_latest(counters) + generate_latest(gauges), CONTENT_TYPE_LATEST
