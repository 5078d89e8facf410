"""The operator API's one error handler: the status and code come from the error's class (``cloud.http.errors``)."""

from __future__ import annotations

import json

import pytest
from fastapi.exceptions import RequestValidationError

from cloud.http.errors import STATUS, error_response, invalid
from common.errors import (
    AlertNotFound,
    ConfigError,
    Conflict,
    EdgeFleetError,
    FleetError,
    FleetNotFound,
    Forbidden,
    ManifestError,
    NotFound,
    QueryError,
    ReleaseConflict,
    ReleaseError,
    ReleaseNotFound,
    ReleaseTooLarge,
    RolloutConflict,
    RolloutError,
    RolloutNotFound,
    StoreError,
    TransitionError,
    Unauthenticated,
)


def answer(exc: Exception) -> tuple[int, str, str, dict[str, str]]:
    response = error_response(exc)
    body = json.loads(response.body)
    return response.status_code, body["error"], body["detail"], dict(response.headers)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (invalid("until_ms", "not in the future"), 422, "invalid_request"),
        (Unauthenticated("no token"), 401, "unauthorized"),
        (Forbidden("operator only"), 403, "forbidden"),
        (NotFound("No device by the id of 'd9' was found"), 404, "not_found"),
        (AlertNotFound("a1"), 404, "not_found"),
        (FleetNotFound("no group by the name of 'g'"), 404, "not_found"),  # a FleetError, and not a 409
        (ReleaseNotFound("9.9.9", "no such release"), 404, "not_found"),
        (RolloutNotFound("r9", "no rollout"), 404, "not_found"),
        (TransitionError("device 'd1' cannot go from retired to active"), 409, "transition_refused"),
        (FleetError("group 'g' already exists"), 409, "conflict"),
        (Conflict("busy"), 409, "conflict"),
        (ReleaseConflict("1.0.0", "exists", "already published"), 409, "exists"),
        (ReleaseConflict("1.0.0", "busy", "being created"), 409, "busy"),
        (RolloutConflict("r1", "state", "r1 is completed"), 409, "state"),
        (RolloutConflict("r1", "transition", "cannot pause"), 409, "transition"),
        (ReleaseTooLarge("1.0.0", "over the limit"), 413, "too_large"),
        (ReleaseError("1.0.0", "bad-signature", "not by a trusted key"), 400, "bad_signature"),
        (RolloutError("r1", "invalid", "canary must be positive"), 400, "invalid"),
        (QueryError("site = ", 7, "expected a value"), 400, "invalid_query"),
        (ConfigError("tier 'x' is not one of auto, raw, minute, hour"), 400, "invalid_request"),
        (StoreError("store listing failed on sqlite:///x: disk I/O error"), 503, "store_unavailable"),
        (ManifestError("1.0.0", "malformed", "not JSON"), 500, "error"),  # raised on purpose, mapped nowhere
    ],
)
def test_the_status_comes_from_the_class_and_the_detail_is_the_message(exc, status, code) -> None:
    got_status, got_code, detail, headers = answer(exc)
    assert (got_status, got_code) == (status, code)
    assert detail  # the message (or the fields) always reaches the operator
    assert ("www-authenticate" in headers) == (status == 401)


def test_a_message_that_reads_like_not_found_does_not_make_a_404() -> None:
    # the old fleet routes chose 404 by `str(exc).startswith("no ")`; the class decides now
    assert answer(FleetError("no more room in group 'g'"))[0] == 409
    assert answer(StoreError("no such table: devices"))[0] == 503


def test_more_specific_classes_come_first_in_the_table() -> None:
    classes = [cls for cls, _, _ in STATUS]
    for i, cls in enumerate(classes):
        for later in classes[i + 1 :]:
            assert not issubclass(later, cls), f"{later.__name__} is shadowed by {cls.__name__} before it"
    assert classes[-1] is EdgeFleetError  # the catch-all is last
    assert RequestValidationError in classes
