"""The cloud's state store (SQLAlchemy Core; SQLite by default, PostgreSQL by URL).

    schema.py      the tables as they are now
    migrations.py  the ordered schema steps applied at open, recorded in ``schema_version``
    batch.py       a forwarded batch sorted into telemetry rows, gap, status and command reports (no I/O)
    store.py       ``Store``: open, ingest, touch_gateway; devices, sites and site health; telemetry
                   summary, gaps and unexplained missing ranges; downlink commands
    alerts.py      the part of ``Store`` that keeps alerts, acknowledgements and silences
    releases.py    the part of ``Store`` that keeps firmware releases and their delta outcomes
    fleet.py       the part of ``Store`` that keeps inventory, tags, groups, lifecycle and its history,
                   config layers and each device's desired and applied config, alerts raised at a site
    metrics.py     the part of ``Store`` that keeps raw metric points, their minute/hour rollups, retention
"""

from cloud.store.migrations import MIGRATIONS, Migration
from cloud.store.schema import COMMAND_STATUSES
from cloud.store.store import IngestResult, Store

__all__ = ["COMMAND_STATUSES", "MIGRATIONS", "IngestResult", "Migration", "Store"]
