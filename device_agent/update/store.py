"""The update record on disk: one small JSON file, replaced atomically (temp file, fsync, rename).

A power cut during ``save`` leaves the previous record or the new one, never a
mix; ``load`` on power-on returns ``None`` only if no record was ever saved.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from common.errors import UpdateError
from common.fileio import write_atomic
from device_agent.update.states import UpdateRecord

__all__ = ["RecordStore"]


class RecordStore:
    """``save(record)`` durably; ``load()`` the last saved record (or None).

    ``after_save`` is called once a record is durable (the power-cut harness
    cuts power there).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, after_save: Callable[[UpdateRecord], None] | None = None
    ) -> None:
        self.path = Path(path)
        self.after_save = after_save

    def load(self) -> UpdateRecord | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UpdateError(f"update record {str(self.path)!r} cannot be read: {exc}") from exc
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise UpdateError(f"update record {str(self.path)!r} is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise UpdateError(f"update record {str(self.path)!r} is not a JSON object")
        try:
            return UpdateRecord.from_dict(data)
        except UpdateError as exc:
            raise UpdateError(f"update record {str(self.path)!r}: {exc}") from exc

    def save(self, record: UpdateRecord) -> None:
        data = json.dumps(record.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        try:
            write_atomic(self.path, data, 0o644)
        except OSError as exc:
            raise UpdateError(f"update record {str(self.path)!r} cannot be written: {exc}") from exc
        if self.after_save is not None:
            self.after_save(record)
