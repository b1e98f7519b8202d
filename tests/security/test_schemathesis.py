"""schemathesis against both services' `/openapi.json` on the live cluster: generated valid and
invalid requests for every operation, sent with a credential of a role the route table admits,
get no 5xx, answers match the documented statuses, content types and schemas, and no operation
answers without its credential (`ignored_auth`). The documents have no `default` response, so
the status and schema checks can fail, and the last test shows that they do. Bounded: EXAMPLES
per operation and mode, derandomized so that a run is reproducible."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from harness.cluster import Cluster
from tests.support.cluster_client import SEEN_BODIES
from tests.support.route_policy import CLUSTER_ROLES, RouteInfo, edge_routes, ledger_routes

pytestmark = [pytest.mark.slow]

EXAMPLES = 25
REQUEST_TIMEOUT_S = 10.0
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
]
MODES = {"positive": GenerationMode.POSITIVE, "negative": GenerationMode.NEGATIVE}


def _token(cluster: Cluster, service: str, route: RouteInfo) -> dict[str, str]:
    if route.public:
        return {}
    role = min(route.roles & CLUSTER_ROLES[service])
    return {"Authorization": f"Bearer {cluster.tokens[role]}"}


def _has_inputs(operation: schemathesis.APIOperation) -> bool:
    return bool(len(operation.body) or len(operation.path_parameters) or len(operation.query))


def _fuzz(operation: schemathesis.APIOperation, headers: dict[str, str], mode: str, service: str) -> None:
    checks = CHECKS + ([negative_data_rejection] if mode == "negative" else [])

    @given(case=operation.as_strategy(generation_mode=MODES[mode]))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers=headers, timeout=REQUEST_TIMEOUT_S)
        SEEN_BODIES.append((case.formatted_path, response.status_code, response.content))
        case.validate_response(response, checks=checks, headers=headers)

    run()


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("service", ["ledger", "eu"])
def test_generated_requests_get_no_5xx_and_answers_match_the_openapi_document(cluster, service, mode, tmp_path: Path):
    routes = {r.label: r for r in (ledger_routes if service == "ledger" else edge_routes)(tmp_path)}
    schema = schemathesis.openapi.from_url(cluster.url(service) + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures = []
    for operation in operations:
        if mode == "negative" and not _has_inputs(operation):
            continue  # nothing in it can be made invalid
        try:
            _fuzz(operation, _token(cluster, service, routes[operation.label]), mode, service)
        except Exception as e:  # noqa: BLE001  one operation's failure must not hide the others'
            failures.append(f"{operation.label}: {e}")
    assert failures == [], "\n\n".join(failures)


@pytest.mark.parametrize("check", ["response_schema_conformance", "status_code_conformance"])
def test_the_conformance_checks_fail_when_the_document_is_wrong(cluster, check):
    """The checks above can fail: against a copy of the ledger's document with one schema (or one
    status) made wrong, the same check refuses the same live answer it accepts from the real one."""
    real = schemathesis.openapi.from_url(cluster.url("ledger") + "/openapi.json")
    doc = copy.deepcopy(real.raw_schema)
    responses = doc["paths"]["/healthz"]["get"]["responses"]
    if check == "response_schema_conformance":
        responses["200"]["content"]["application/json"]["schema"] = {
            "type": "object",
            "required": ["status", "uptime_s"],
        }  # a member the answer does not have
    else:
        responses["204"] = responses.pop("200")  # a status the answer does not have
    run = {
        "response_schema_conformance": response_schema_conformance,
        "status_code_conformance": status_code_conformance,
    }[check]
    for document, fails in ((real, False), (schemathesis.openapi.from_dict(doc), True)):
        case = document["/healthz"]["GET"].Case()
        response = case.call(base_url=cluster.url("ledger"), timeout=REQUEST_TIMEOUT_S)
        if fails:
            with pytest.raises(FailureGroup) as failed:
                case.validate_response(response, checks=[run])
            [failure] = failed.value.exceptions
            expected = "uptime_s" if check == "response_schema_conformance" else "Undocumented status code"
            assert expected in str(failure), str(failure)
        else:
            case.validate_response(response, checks=[run])
