"""The OpenAPI document as a contract: schemathesis against a live cloud process, with a token.

A real cloud (with a gateway and an agent, so lists hold rows) serves ``/openapi.json``; schemathesis
generates requests for every operation in it (valid and invalid ones) and checks each answer: never a
server error (5xx), a status the document names for that route, its content type, and a body matching the
schema of that status (``ErrorBody`` for every error). Examples are derandomized, so a run is repeatable.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from simulations.fleet import ProcFleet
from tests.waits import until_true

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 12  # per operation


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    fleet = ProcFleet(tmp_path_factory.mktemp("openapi-fleet"))
    try:
        ep = fleet.start_cloud()
        fleet.start_gateway("gw-1", "site-1")
        fleet.start_agent("dev-1", "site-1", "gw-1")
        until_true(lambda: fleet.api("/v1/devices")["devices"], "the agent's records in the cloud")
        yield ep["api"], (fleet.dir("cloud") / "api_token").read_text().strip()
    finally:
        fleet.kill_all()


@pytest.fixture(scope="module")
def api_schema(live_api: tuple[str, str]) -> schemathesis.BaseSchema:
    url, _ = live_api
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


def test_the_document_names_every_route_with_models_and_error_bodies(api_schema: schemathesis.BaseSchema) -> None:
    raw = api_schema.raw_schema
    operations = [(path, method, op) for path, item in raw["paths"].items() for method, op in item.items()]
    assert len(operations) >= 45
    for path, method, op in operations:
        ok = [code for code in op["responses"] if code.startswith("2")]
        assert ok, f"{method} {path}: no success response"
        for code in ok:
            content = op["responses"][code].get("content", {})
            schema_ = next(iter(content.values()), {}).get("schema", {})
            assert schema_ and schema_ != {}, f"{method} {path} {code}: no response schema"
        if path != "/v1/health":
            for code in ("401", "403", "404", "422"):
                ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), (method, path, code)
        if method in ("post", "put", "patch") and path not in NO_BODY:
            assert "requestBody" in op, f"{method} {path}: no request body in the document"


NO_BODY = {"/v1/devices/{device_id}/approve", "/v1/devices/{device_id}/reject", "/v1/devices/{device_id}/reinstate",
           "/v1/devices/{device_id}/reprovision", "/v1/devices/{device_id}/rotate", "/v1/sites/{site}/rotate",
           "/v1/enroll-tokens/{token_id}/revoke", "/v1/tokens/{token_id}/revoke",
           "/v1/ddi-tokens/{device_id}/revoke"}


def test_the_live_api_keeps_to_its_document(api_schema: schemathesis.BaseSchema, live_api: tuple[str, str]) -> None:
    """Every operation, each with its own examples; all failures are reported together, each with its case."""
    url, token = live_api
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert operations
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=60)

        try:
            run()
        except Exception as exc:  # noqa: BLE001 -- collected, then failed together below
            failures.append(f"{operation.label}: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
