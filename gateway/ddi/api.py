"""The JSON of hawkBit's DDI API (version 1) that the gateway speaks, as pure functions: answers made, bodies
checked. A body that is not what DDI sends raises ``ValueError`` naming the field (the core answers 400).

    poll_answer(60.0, {"deploymentBase": href})      # {"config": {"polling": {"sleep": "00:01:00"}}, "_links": ...}
    deployment(42, artifact, href)                  # the deploymentBase (or installedBase) of action 42
    parse_feedback(body) -> (execution, finished, details)
    parse_config_data(body) -> {attribute: value}
    parse_range("bytes=100-", size) -> (start, end, partial) or None (unsatisfiable)
"""

from __future__ import annotations

import json
from typing import Any

from gateway.ddi.events import ArtifactInfo

__all__ = ["EXECUTIONS", "FINISHED", "bad_request", "deployment", "error", "fine", "parse_config_data", "parse_feedback",
           "parse_range", "poll_answer", "unauthorized"]

EXECUTIONS = ("closed", "proceeding", "canceled", "scheduled", "rejected", "resumed", "downloaded", "download")
FINISHED = ("success", "failure", "none")
MAX_ATTRIBUTES = 64
MAX_DETAILS = 32


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def error(status: int, message: str) -> bytes:
    """hawkBit's error body."""
    return _json({"errorCode": f"edgefleet.ddi.{status}", "message": message})


def unauthorized() -> bytes:
    """One text for every refusal: which check failed is not the caller's to learn."""
    return error(401, "authentication failed (send Authorization: TargetToken <the token issued for this device>)")


def bad_request(message: str) -> bytes:
    return error(400, message)


def fine() -> bytes:
    return b""


def _sleep(seconds: float) -> str:
    s = max(1, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def poll_answer(sleep_s: float, links: dict[str, str]) -> bytes:
    body: dict[str, Any] = {"config": {"polling": {"sleep": _sleep(sleep_s)}}}
    if links:
        body["_links"] = {k: {"href": v} for k, v in links.items()}
    return _json(body)


def deployment(action: int, art: ArtifactInfo, href: str, *, installed: bool = False) -> bytes:
    """One chunk (the release) with one artifact (its .swu), to download and install now, in an open window."""
    body = {
        "id": str(action),
        "deployment": {
            "download": "forced",
            "update": "forced",
            "maintenanceWindow": "available",
            "chunks": [{
                "part": "os",
                "version": art.version,
                "name": f"release-{art.version}",
                "artifacts": [{
                    "filename": art.filename,
                    "hashes": {"sha1": art.sha1, "md5": art.md5, "sha256": art.sha256},
                    "size": art.size,
                    "_links": {"download": {"href": href}, "download-http": {"href": href},
                               "md5sum": {"href": f"{href}.MD5SUM"}, "md5sum-http": {"href": f"{href}.MD5SUM"}},
                }],
            }],
        },
    }
    if installed:
        body["actionHistory"] = {"status": "finished", "messages": ["installed"]}
    return _json(body)


def _object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError("the body is not a JSON object")
    return value


def parse_feedback(body: bytes) -> tuple[str, str, list[str]]:
    """``(execution, finished, details)`` of an action's feedback."""
    status = _object(body).get("status")
    if not isinstance(status, dict):
        raise ValueError("feedback has no status object")
    execution = status.get("execution")
    if execution not in EXECUTIONS:
        raise ValueError(f"status.execution {str(execution)[:32]!r} is not one of {', '.join(EXECUTIONS)}")
    result = status.get("result") or {}
    finished = result.get("finished", "none") if isinstance(result, dict) else None
    if finished not in FINISHED:
        raise ValueError(f"status.result.finished {str(finished)[:32]!r} is not one of {', '.join(FINISHED)}")
    details = status.get("details") or []
    if not isinstance(details, list):
        raise ValueError("status.details is not a list")
    return execution, finished, [str(d)[:200] for d in details[:MAX_DETAILS]]


def parse_config_data(body: bytes) -> dict[str, str]:
    """The attributes a device sends (``data``); ``mode`` replace/merge both mean "these are its attributes now"."""
    data = _object(body).get("data")
    if not isinstance(data, dict):
        raise ValueError("configData has no data object")
    if len(data) > MAX_ATTRIBUTES:
        raise ValueError(f"configData has {len(data)} attributes; at most {MAX_ATTRIBUTES} are taken")
    out = {}
    for k, v in data.items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool) or not 0 < len(str(k)) <= 64:
            raise ValueError(f"attribute {str(k)[:64]!r} must have a 1..64 character name and a string or number value")
        out[f"attr.{k}"] = str(v)[:256]
    return out


def parse_range(header: str, size: int) -> tuple[int, int, bool] | None:
    """``(start, end, partial)`` (end inclusive) for a ``Range`` header; the whole file when there is none or it
    is not one single byte range (RFC 9110 lets a server ignore it); None when it cannot be satisfied (416)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return 0, max(0, size - 1), False
    first, _, last = header[6:].strip().partition("-")
    try:
        if not first:  # the last N bytes
            n = int(last)
            if n <= 0:
                return None
            return max(0, size - n), size - 1, True
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return 0, max(0, size - 1), False
    if start >= size or end < start:
        return None
    return start, min(end, size - 1), True
