"""What the cloud observes as it runs, for Prometheus: counters and the ingest latency histogram."""

from __future__ import annotations

import collections
import operator
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "INGEST_BUCKETS", "CloudMetrics", "exposition"]

_STREAM = operator.attrgetter("stream")

CONTENT_TYPE = CONTENT_TYPE_LATEST
# seconds: a batch commits in milliseconds on a quiet store, seconds behind a backlog or a slow disk
INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class CloudMetrics:
    """Counters and the ingest histogram of one cloud process, in a registry of its own (never the global one)."""

    def __init__(self) -> None:
        disable_created_metrics()  # no `_created` series: a counter's start time is not a metric of the fleet
        self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter("edgefleet_cloud_records_received", "Records that arrived from gateways, by stream",
                                ["stream"], registry=self.registry)
        self.stored = Counter("edgefleet_cloud_records_stored", "Records committed to the store (new ones)",
                              ["stream"], registry=self.registry)
        self.duplicates = Counter("edgefleet_cloud_records_duplicate", "Records that arrived again and were not stored twice",
                                  registry=self.registry)
        self.ingest_seconds = Histogram("edgefleet_cloud_ingest_commit_seconds",
                                        "Time from a forwarded batch's arrival to its commit in the store",
                                        buckets=INGEST_BUCKETS, registry=self.registry)

    def observe_ingest(self, seconds: float, records: Iterable[Any], stored: int, duplicates: int) -> None:
        """One committed batch: ``records`` (each with a ``stream``), of which ``stored`` were new."""
        per_stream = collections.Counter(map(_STREAM, records))  # counted in C: this runs for every batch
        for stream, n in per_stream.items():
            self.received.labels(stream).inc(n)
        if len(per_stream) == 1:
            self.stored.labels(next(iter(per_stream))).inc(stored)
        elif stored:  # a mixed batch: the new ones are shared out in proportion (a batch is one stream in practice)
            total = sum(per_stream.values())
            for stream, n in per_stream.items():
                self.stored.labels(stream).inc(stored * n / total)
        self.duplicates.inc(duplicates)
        self.ingest_seconds.observe(seconds)


class _Fixed(Collector):
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def exposition(live: CloudMetrics | None, *collectors: Collector) -> bytes:
    """The text format of ``live`` and ``collectors`` together (one scrape)."""
    registry = CollectorRegistry(auto_describe=False)
    if live is not None:
        registry.register(_Fixed(live.registry.collect()))
    for c in collectors:
        registry.register(c)
    return generate_latest(registry)


