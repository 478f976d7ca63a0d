"""The OpenAPI document of /api/v1, and Schemathesis fuzzing the API against it (both databases)."""

from __future__ import annotations

import uuid

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from starter import credits
from starter.extensions import db

from .test_api import new_key, new_team


def test_openapi_document_describes_every_endpoint(app, client):
    response = client.get("/api/v1/openapi.json")  # public: no key needed
    assert response.status_code == 200
    document = response.json
    assert document["openapi"].startswith("3.1")
    routes = {
        (rule.rule.replace("<int:hold_id>", "{hold_id}"), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("api.") and rule.endpoint != "api.openapi_document"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert described == routes
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI 3.1 meta-schema
    for item in document["paths"].values():
        for operation in item.values():
            assert "401" in operation["responses"] and "429" in operation["responses"]
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                name = body["$ref"].rsplit("/", 1)[-1]
                assert document["components"]["schemas"][name]["additionalProperties"] is False, name


@pytest.fixture
def fuzz_key(app) -> str:
    team = new_team("fuzz", purchased=credits.MAX_AMOUNT)
    credits.hold(team, 5, key="seed-hold")  # a hold id for capture/release to find
    db.session.commit()
    return new_key(team)


@pytest.mark.parametrize("app_config", [{"API_RATE_LIMIT": "100000 per minute"}])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis_finds_no_server_error_and_no_schema_break(app, fuzz_key, mode):
    config = schemathesis.Config.from_dict(
        {"auth": {"openapi": {"apiKey": {"bearer": fuzz_key}}}, "generation": {"with-security-parameters": False}}
    )
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=config)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    if mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7
    statuses: dict[int, int] = {}

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.path == "/api/v1/balance":
            continue  # it takes no input, so there is nothing to make invalid

        @hypothesis.settings(
            max_examples=20,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def run(case):  # type: ignore[no-untyped-def]
            keyed = isinstance(case.body, dict) and "idempotency_key" in case.body
            if mode is GenerationMode.POSITIVE and not keyed and "Idempotency-Key" not in (case.headers or {}):
                case.headers = {**(case.headers or {}), "Idempotency-Key": uuid.uuid4().hex}  # mostly valid calls
            response = case.call_and_validate(checks=checks)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        run()
    assert statuses.get(401, 0) < sum(statuses.values()) / 2, "the key reached the API"
    assert credits.verify() == []
