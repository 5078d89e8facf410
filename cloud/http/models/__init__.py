"""The operator API's response models: what each route answers, as its OpenAPI document shows it.

    errors.py     ``ErrorBody`` (every error: ``{"error": code, "detail": message}``) and ``ERROR_RESPONSES``
    fleet.py      devices, sites, telemetry, gaps, updates, commands, fleet views, groups, config, metrics
    operations.py alerts and silences, releases, rollouts, identities, revocations, the audit log, users, tokens

Rows are declared field by field; a row model allows further fields (``extra="allow"``) where a row
carries what a device or gateway reported (inventory, status values), so the document names every field
the API sets and a report's own keys pass through. List responses carry ``next_cursor``
(``cloud.http.paging``).
"""

from cloud.http.models.errors import ERROR_RESPONSES, ErrorBody

__all__ = ["ERROR_RESPONSES", "ErrorBody"]
