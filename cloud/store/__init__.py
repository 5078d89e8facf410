"""The cloud's state store (SQLAlchemy Core; SQLite by default, PostgreSQL by URL).

    schema.py      the tables as they are now
    migrations.py  the ordered schema steps applied at open, recorded in ``schema_version``
    store.py       ``Store``: open, ingest, touch_gateway, list_devices, list_sites, telemetry_summary
"""

from cloud.store.migrations import MIGRATIONS, Migration
from cloud.store.store import IngestResult, Store

__all__ = ["MIGRATIONS", "IngestResult", "Migration", "Store"]
