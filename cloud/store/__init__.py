"""The cloud's state store (SQLAlchemy Core; SQLite by default, PostgreSQL by URL).

    database.py    ``Database``: the engine, migrations applied at open, transactions, ``StoreError``
    schema.py      the tables as they are now
    migrations.py  the ordered schema steps applied at open, recorded in ``schema_version``
    batch.py       a forwarded batch sorted into telemetry rows, gap, status and command reports (no I/O)
    bulk.py        telemetry rows by the database's bulk path (PostgreSQL COPY + one INSERT..SELECT; SQLite executemany)
    fold.py        the metrics follower's fold as set-based SQL (stored metrics rows to points and rollups)
    store.py       ``Store``: the database and one repository per feature, opened together

One repository per feature, each handed to the service that uses it:

    telemetry.py   ingest; sites, gateways, devices; telemetry summary, gaps, unexplained missing ranges
    commands.py    downlink commands and their statuses
    alerts.py      alerts, acknowledgements, silences; alerts a site raised while offline
    releases.py    firmware releases and their delta outcomes
    rollouts.py    rollouts and the devices they target
    fleet.py       inventory, tags, groups, lifecycle and its history, layered and desired/applied config
    metrics.py     the metric backlog and its follower; raw metric points, their minute/hour rollups, retention
    partitions.py  telemetry by day on PostgreSQL (partitions made ahead, dropped whole) and telemetry retention
    security.py    operators, tokens, claims, identities, revocation lists, the audit log (and their tables)
"""

from cloud.store.database import Database
from cloud.store.migrations import MIGRATIONS, Migration
from cloud.store.schema import COMMAND_STATUSES
from cloud.store.store import Store
from cloud.store.telemetry import IngestResult

__all__ = ["COMMAND_STATUSES", "MIGRATIONS", "Database", "IngestResult", "Migration", "Store"]
