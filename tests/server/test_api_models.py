"""REST bodies: `/openapi.json` describes every response, and the live bodies are exactly the models."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from rohde.server.amplifier import LslAmplifier, RecordingSource
from rohde.server.api_models import (
    ActiveModelInfo,
    ErrorResponse,
    HealthResponse,
    ModelsResponse,
    ReadyResponse,
    StreamsResponse,
)
from rohde.server.app import create_app
from rohde.server.processes import unique_id
from rohde.server.settings import ServerSettings, load_settings

from .conftest import LSL_CONFIG, ModelSet, wait_for

pytestmark = pytest.mark.timeout(90)


def _settings(model_set: ModelSet, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {"models_dir": model_set.models_dir, "model": "good", "stream_name": unique_id("api"),
                              "resolve_interval_s": 0.2, "marker_outlet": False, "lsl_config": LSL_CONFIG}
    return load_settings(**{**values, **overrides})


def _schema(response: dict[str, Any]) -> dict[str, Any]:
    (content,) = response["content"].values()
    schema: dict[str, Any] = content["schema"]
    return schema


def test_every_route_documents_its_bodies(model_set: ModelSet) -> None:
    spec = create_app(_settings(model_set)).openapi()  # the document needs no running server
    operations = {(path, method): op for path, item in spec["paths"].items() for method, op in item.items()}
    assert set(operations) == {("/health", "get"), ("/ready", "get"), ("/models", "get"), ("/models/active", "get"),
                               ("/models/active", "put"), ("/streams", "get"), ("/metrics", "get"),
                               ("/schema/messages", "get"), ("/streams/{stream_id}/alignment", "get"),
                               ("/streams/{stream_id}/alignment", "post"), ("/streams/{stream_id}/alignment", "delete")}
    for (path, method), op in operations.items():
        for status, response in op["responses"].items():
            schema = _schema(response)
            assert "$ref" in schema or schema.get("type"), f"{method.upper()} {path} {status} has no body schema"
    refs = {key: _schema(op["responses"]["200"]).get("$ref", "").rsplit("/", 1)[-1] for key, op in operations.items()}
    assert refs == {("/health", "get"): "HealthResponse", ("/ready", "get"): "ReadyResponse",
                    ("/models", "get"): "ModelsResponse", ("/models/active", "get"): "ActiveModelInfo",
                    ("/models/active", "put"): "ActiveModelInfo", ("/streams", "get"): "StreamsResponse",
                    ("/metrics", "get"): "", ("/schema/messages", "get"): "MessageSchemas",
                    **{("/streams/{stream_id}/alignment", m): "StreamAlignmentReport"
                       for m in ("get", "post", "delete")}}
    metrics_200 = operations["/metrics", "get"]["responses"]["200"]
    assert metrics_200["content"] == {"text/plain": {"schema": {"type": "string"}}}
    assert _schema(operations["/ready", "get"]["responses"]["503"])["$ref"].endswith("/ReadyResponse")
    assert _schema(operations["/models/active", "get"]["responses"]["404"])["$ref"].endswith("/ErrorResponse")
    assert {"401", "403", "422", "500"} <= set(operations["/models/active", "put"]["responses"])
    for method in ("post", "delete"):
        assert {"401", "403", "404"} <= set(operations["/streams/{stream_id}/alignment", method]["responses"])
    for name in ("StreamSnapshot", "StreamQualityReport", "ChannelQualityReport", "ModelPackageSummary",
                 "StreamAlignmentReport"):
        assert spec["components"]["schemas"][name]["properties"], name


def _exactly(model: type[BaseModel], body: Any) -> None:
    """`body` validates against `model` and round-trips unchanged: no field missing, none extra."""
    assert model.model_validate(body).model_dump(mode="json") == body


@contextmanager
def _outlet(model_set: ModelSet, name: str) -> Iterator[None]:
    amp = LslAmplifier(RecordingSource(model_set.recording), name=name, source_id=name, lsl_config=LSL_CONFIG)
    thread = threading.Thread(target=amp.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        amp.stop()
        thread.join(5)


@pytest.mark.lsl
def test_live_bodies_are_the_response_models(model_set: ModelSet) -> None:
    name = unique_id("api")
    with _outlet(model_set, name), TestClient(create_app(_settings(model_set, stream_name=name))) as client:

        def assessed_stream() -> list[dict[str, Any]] | None:
            streams: list[dict[str, Any]] = client.get("/streams").json()["streams"]
            return streams if streams and streams[0]["quality"] is not None else None

        wait_for(assessed_stream, 15)
        for path, model in (("/health", HealthResponse), ("/ready", ReadyResponse), ("/models", ModelsResponse),
                            ("/streams", StreamsResponse)):
            response = client.get(path)
            assert response.status_code == 200, path
            _exactly(model, response.json())
        active = client.get("/models/active").json()
        _exactly(ActiveModelInfo, active)
        assert client.get("/ready").json()["model"] == active and active["name"] == "good"


def test_not_ready_bodies_are_the_response_models(model_set: ModelSet) -> None:
    with TestClient(create_app(_settings(model_set, model="no-such-model"))) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        _exactly(ReadyResponse, ready.json())
        missing = client.get("/models/active")
        assert missing.status_code == 404
        _exactly(ErrorResponse, missing.json())
        _exactly(HealthResponse, client.get("/health").json())
