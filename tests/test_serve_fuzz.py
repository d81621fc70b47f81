"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis): whatever a
client sends, valid by the schema (positive) or not (negative), the answer is never a 5xx and
keeps to the schema (status code, content type, headers, body).

A schema-valid graph can still be wrong in ways JSON schema cannot say (an index past the
objects, an object related to itself, graphs x images over the limit): those get 422 with a
located graph problem, so schemathesis' "valid data is accepted" check is replaced by a
narrower one: schema-valid input never fails the request models' own validation.

Driven through schemathesis' strategies rather than its pytest plugin, whose lazy fixture
schemas do not run under pytest 9.

The cases are the same on every run (`derandomize=True`), whichever tests ran before in the
process. `derandomize` fixes Hypothesis' choices, but not two pools of literals that it and
schemathesis mix into the data: Hypothesis draws (5% of the time) from the constants of every
local module in sys.modules, so the whole suite, which imports training and eval modules, made
other cases than this file alone (a CI failure did not reproduce); schemathesis adds literals
from the app's source. The first is emptied here (`same_cases_every_run`), the second is
turned off in the schema's config, and the config file search (schemathesis.toml) is skipped."""

import hashlib
import importlib.util
import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.internal.conjecture import providers
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig
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
SETTINGS = dict(
    deadline=None,
    derandomize=True,  # the same cases on every run: a CI failure reproduces
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module", autouse=True)
def same_cases_every_run():
    """No local-module constants in Hypothesis' draws while this module fuzzes: which modules
    are imported depends on the tests that ran before. (An internal of Hypothesis; if it
    moves, this fails here rather than letting the cases drift.)"""
    assert callable(providers._get_local_constants) and hasattr(providers, "CONSTANTS_CACHE")
    real = providers._get_local_constants
    providers._get_local_constants = providers.Constants  # an empty pool
    providers.CONSTANTS_CACHE.cache.clear()  # drawn from the pool of earlier tests
    yield
    providers._get_local_constants = real
    providers.CONSTANTS_CACHE.cache.clear()


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    # small limits keep each generated request cheap: at most 2 images of 3 steps
    limits = ServeSettings(
        max_steps=3, default_steps=2, max_images=2, max_batch=2, timeout_s=60,
        allow_hosts=("testserver",),  # schemathesis' in-process client names this host
    )  # fmt: skip
    app = create_app(tiny_pipeline(tmp_path_factory.mktemp("fuzz")), limits, model_name="tiny")
    config = SchemathesisConfig.from_dict({"analysis": {"constants": {"enabled": False}}})
    yield schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    app.state.batcher.close()


def _name(value) -> str:  # schemathesis' NOT_SET body (its repr holds an address)
    return type(value).__name__


def case_digest(operation, mode, n: int) -> tuple[int, str]:
    """(count, sha256) of the first n cases the strategy generates, without sending them."""
    seen = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=n, **SETTINGS)
    def record(case):
        seen.append(json.dumps([case.method, case.path, case.query, case.body], default=_name))

    record()
    return len(seen), hashlib.sha256("\n".join(seen).encode()).hexdigest()


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
    @settings(max_examples=EXAMPLES[method], **SETTINGS)
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


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_cases_do_not_depend_on_the_modules_imported(api_schema, tmp_path, mode):
    """A module imported between two generations (as another test file would import one)
    leaves the cases as they were. Without same_cases_every_run, its literals enter
    Hypothesis' draws: 80 positive /api/generate cases differed from the 60th on when the
    training, eval and CLI modules were imported first."""
    operation = api_schema["/api/generate"]["POST"]
    before = case_digest(operation, mode, 80)
    source = tmp_path / "other_module_of_literals.py"
    literals = [0.26130258, 0.1, 3, 7, 0.73, 1e-4, 123456, "red circle", "left of", "x" * 9]
    source.write_text(f"LITERALS = {literals!r}\n")
    spec = importlib.util.spec_from_file_location("other_module_of_literals", source)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module  # Hypothesis scans sys.modules
    try:
        spec.loader.exec_module(module)
        assert case_digest(operation, mode, 80) == before
    finally:
        del sys.modules[spec.name]
    assert before[0] == 80
