"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis): whatever a
client sends, valid by the schema (positive) or not (negative), the answer is never a 5xx and
keeps to the schema (status code, content type, headers, body).

A schema-valid graph can still be wrong in ways JSON schema cannot say (an index past the
objects, an object related to itself, graphs x images over the limit): those get 422 with a
located graph problem, so schemathesis' "valid data is accepted" check is replaced by a
narrower one: schema-valid input never fails the request models' own validation.

Driven through schemathesis' strategies rather than its pytest plugin, whose lazy fixture
schemas do not run under pytest 9."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from serve_fixtures import tiny_pipeline

from sg2image.serve import ServeSettings, create_app

pytestmark = pytest.mark.usefixtures("one_thread")

OPERATIONS = [
    ("/api/generate", "POST"),
    ("/api/validate", "POST"),
    ("/api/draw", "POST"),
    ("/api/vocabulary", "GET"),
    ("/api/examples", "GET"),
    ("/api/health", "GET"),
]
EXAMPLES = {"POST": 80, "GET": 3}  # per operation and mode; each request takes milliseconds


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    # small limits keep each generated request cheap: at most 2 images of 3 steps
    limits = ServeSettings(
        max_steps=3, default_steps=2, max_images=2, max_batch=2, timeout_s=60,
        allow_hosts=("testserver",),  # schemathesis' in-process client names this host
    )  # fmt: skip
    app = create_app(tiny_pipeline(tmp_path_factory.mktemp("fuzz")), limits, model_name="tiny")
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    app.state.batcher.close()


def test_every_operation_is_fuzzed(api_schema):
    found = {(op.ok().path, op.ok().method.upper()) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_api_never_fails_and_keeps_to_its_schema(api_schema, path, method, mode):
    operation = api_schema[path][method]
    if mode is GenerationMode.NEGATIVE and (method == "GET" or path == "/api/validate"):
        pytest.skip("no parameters or body to get wrong (/api/validate checks any JSON)")
    statuses = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[method],
        deadline=None,
        derandomize=True,  # the same cases on every run: a CI failure reproduces
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
        assert response.status_code < 500, response.text
        statuses.append(response.status_code)
        if mode is GenerationMode.POSITIVE and response.status_code == 422:
            kinds = {p["type"] for p in response.json()["detail"]}
            assert kinds <= {"graph", "too_many_images"}, response.text

    check()
    if mode is GenerationMode.NEGATIVE:  # schema-breaking input is refused, never served
        assert statuses and all(400 <= s < 500 for s in statuses), statuses
    else:  # and the fuzzing reached the real work, not only the refusals
        assert statuses.count(200) >= len(statuses) // 10, statuses
