"""Property-based fuzz of the REST API from its own `/openapi.json` (schemathesis): every operation, a
bounded and seeded number of examples, against the in-process app with its lifespan running, a valid
model and broken packages in its models folder, and an admin token that some calls present.

Checks: no 5xx (`not_a_server_error`), and every response conforms to the document: a documented
status code, content type and headers, and a body that validates against the documented schema.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.python.asgi import shutdown_lifespans

from rohde.server.app import create_app
from rohde.server.processes import unique_id
from rohde.server.settings import load_settings

from .conftest import LSL_CONFIG, ModelSet

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.timeout(240)

ADMIN = "fuzz-admin-token"
MAX_EXAMPLES = 25  # per operation and generation mode
OPERATIONS = [("GET", "/health"), ("GET", "/ready"), ("GET", "/models"), ("GET", "/models/active"),
              ("PUT", "/models/active"), ("GET", "/streams"), ("GET", "/metrics"), ("GET", "/schema/messages"),
              ("GET", "/streams/{stream_id}/alignment"), ("POST", "/streams/{stream_id}/alignment"),
              ("DELETE", "/streams/{stream_id}/alignment")]
# Random strings never name a package; a share of the PUT bodies name a real one, valid or broken.
PACKAGES = ("good", "good2", "broken", "latin1", "nested")
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
               response_schema_conformance]
CHECKS = {GenerationMode.POSITIVE: CONFORMANCE, GenerationMode.NEGATIVE: [*CONFORMANCE, negative_data_rejection]}


@dataclass
class FuzzTarget:
    schema: Any  # schemathesis' OpenApiSchema of the app
    examples: Counter[str] = field(default_factory=Counter)  # "METHOD /path mode" -> examples run
    statuses: Counter[int] = field(default_factory=Counter)  # status code -> responses


@pytest.fixture(scope="module", params=["open-reads", "read-token"])
def target(request: pytest.FixtureRequest, model_set: ModelSet,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    """The app's own document, loaded from the in-process app (schemathesis starts its lifespan at the
    first call); models good, good2, broken (checksum), latin1 (metadata not UTF-8), nested (too deep).
    Reads are open, or need a read token (which the fuzz never presents; the admin token reads too)."""
    root = tmp_path_factory.mktemp("fuzz-models")
    for name in ("good", "good2", "broken"):
        shutil.copytree(model_set.models_dir / name, root / name)
    shutil.copytree(root / "good", root / "latin1")
    (root / "latin1" / "metadata.json").write_bytes(b'{"name": "g\xe9od"}')
    shutil.copytree(root / "good", root / "nested")
    (root / "nested" / "metadata.json").write_text("[" * 50_000 + "]" * 50_000)
    read_token = "fuzz-read-token" if request.param == "read-token" else None
    app = create_app(load_settings(models_dir=root, model="good", stream_name=unique_id("fuzz"),
                                   resolve_interval_s=0.5, marker_outlet=False, lsl_config=LSL_CONFIG,
                                   admin_token=ADMIN, read_token=read_token))
    fuzz = FuzzTarget(schemathesis.openapi.from_asgi("/openapi.json", app))
    yield fuzz
    shutdown_lifespans()  # stops the app's threads
    logger.info("REST fuzz (%s): %d operations, %d examples (%s), responses by status %s.", request.param,
                len({key.rsplit(" ", 1)[0] for key in fuzz.examples}), sum(fuzz.examples.values()),
                dict(fuzz.examples), dict(sorted(fuzz.statuses.items())))


def test_the_document_lists_the_fuzzed_operations(target: FuzzTarget) -> None:
    listed = {(op.ok().method.upper(), op.ok().path) for op in target.schema.get_all_operations()}
    assert listed == set(OPERATIONS)


# The plain GET routes take no parameters, so only the PUT and the alignment routes (a path parameter) have
# invalid requests to generate.
CASES = [(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS] + [
    ("PUT", "/models/active", GenerationMode.NEGATIVE),
    *[(method, path, GenerationMode.NEGATIVE) for method, path in OPERATIONS if "{stream_id}" in path]]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_no_server_error_and_every_response_as_documented(target: FuzzTarget, method: str, path: str,
                                                          mode: GenerationMode) -> None:
    operation = target.schema[path][method]
    key = f"{method} {path} {mode.value}"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        target.examples[key] += 1
        count = target.examples[key]
        headers = {"Authorization": f"Bearer {ADMIN}"} if count % 2 == 0 else {}  # every other call
        if method == "PUT" and isinstance(case.body, dict) and count % 3 == 0:
            case.body = {**case.body, "name": PACKAGES[count // 3 % len(PACKAGES)]}
        response = case.call_and_validate(headers=headers, checks=CHECKS[mode])
        target.statuses[response.status_code] += 1

    run()
    assert target.examples[key] >= 1
