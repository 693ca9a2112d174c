"""Requests generated from the service's own OpenAPI schema (schemathesis): bodies that fit the schema
and bodies that do not, for every operation, reload included (authorised); none may get a 5xx.

Each operation's cases come from schemathesis' hypothesis strategy and run in-process (ASGI); its
pytest plugin's lazy fixture loader does not run under pytest 9, so the test drives hypothesis itself."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from recserve.app import Settings, create_app
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

TOKEN = "generated-suite-admin-token"
OPERATIONS = [
    ("POST", "/recommend"),
    ("POST", "/recommend/batch"),
    ("POST", "/explain"),  # this registry's models have no explanation graph: 409 (tests/deploy/test_explain.py)
    ("GET", "/healthz"),
    ("GET", "/models"),
    ("POST", "/admin/reload"),
]


@pytest.fixture(scope="module")
def api_schema(served_registry):
    app = create_app(Settings(registry=served_registry, admin_token=TOKEN, max_batch=8))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_generated(api_schema):
    listed = {(result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()}
    assert listed == set(OPERATIONS)


@pytest.mark.parametrize(
    "method, path, mode",
    [(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS]
    + [
        (method, path, GenerationMode.NEGATIVE) for method, path in OPERATIONS if method == "POST"
    ],  # GETs take no input
)
def test_generated_requests_get_no_server_error(api_schema, method, path, mode):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def no_server_error(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error])

    no_server_error()
