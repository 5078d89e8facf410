"""The cloud's Prometheus metrics (``GET /metrics``, ``cloud.http.prometheus``; ``--metrics-bind`` for a plain listener).

    live.py      ``CloudMetrics``: what the driver observes as it runs (records received and stored per stream,
                 duplicates, the ingest commit latency histogram), in its own registry
    fleet.py     ``read_fleet(store, now_ms)``: one snapshot of the fleet from the store (gateway statuses, drops,
                 enrollments, rollout device states, devices online), and ``FleetCollector`` over it
    exposition   ``exposition(live, snapshot)``: the text format of both, as a scrape gets it

Names follow Prometheus' conventions: the ``edgefleet_`` namespace, base units in the name (``_seconds``,
``_bytes``), ``_total`` on counters, labels for the dimensions (site, gateway, stream, reason, state).
"""

from cloud.metrics.fleet import FleetCollector, read_fleet
from cloud.metrics.live import CONTENT_TYPE, CloudMetrics, exposition

__all__ = ["CONTENT_TYPE", "CloudMetrics", "FleetCollector", "exposition", "read_fleet"]
