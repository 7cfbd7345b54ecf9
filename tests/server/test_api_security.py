"""The REST surface against bad packages, hostile names and bodies, missing tokens, and leaks: the
in-process app (its lifespan, model manager and routes) with broken packages in its models folder."""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from rohde.core.model_package import METADATA_FILE, MODEL_FILE, sha256_of
from rohde.server.app import create_app
from rohde.server.processes import unique_id
from rohde.server.security import (
    TokenRedactingFilter,
    loggable,
    origin_allowed,
    presented_token,
    read_refusal,
    redact_tokens,
    token_matches,
    websocket_refusal,
)
from rohde.server.settings import ServerSettings, load_settings

from .conftest import LSL_CONFIG, ModelSet

pytestmark = pytest.mark.timeout(120)

ADMIN = "admin-secret-token"
READER = "read-secret-token"
BAD_PACKAGES = {  # folder -> what /models and PUT must say about it
    "latin1": "not UTF-8 text",
    "nested": "nested too deeply",
    "deep": "more than 32 levels deep",
    "broken": "Checksum of model.onnx",
    "truncated": "ONNX Runtime cannot load model.onnx",
    "wrongtypes": "not valid model metadata",
    "no_onnx": "has no model.onnx",
    "outside": "link leading out of the models folder",
}


def _edit_metadata(package: Path, **changes: Any) -> None:
    meta = json.loads((package / METADATA_FILE).read_text())
    meta.update(changes)
    (package / METADATA_FILE).write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def models_dir(model_set: ModelSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """good, good2 and broken (bad checksum) from `model_set`, and packages every way broken."""
    root = tmp_path_factory.mktemp("security-models")
    for name in ("good", "good2", "broken"):
        shutil.copytree(model_set.models_dir / name, root / name)
    for name in ("latin1", "nested", "deep", "truncated", "wrongtypes", "no_onnx"):
        shutil.copytree(root / "good", root / name)
    text = (root / "good" / METADATA_FILE).read_text()
    (root / "latin1" / METADATA_FILE).write_bytes(text.replace('"name": "good"', '"name": "g\u00e9od"')
                                                  .encode("latin-1"))
    (root / "nested" / METADATA_FILE).write_text('{"metrics": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _edit_metadata(root / "deep", metrics=json.loads("[" * 40 + "]" * 40))
    # A lying package: its checksum matches, but the graph is cut in half.
    onnx = (root / "good" / MODEL_FILE).read_bytes()
    (root / "truncated" / MODEL_FILE).write_bytes(onnx[: len(onnx) // 2])
    _edit_metadata(root / "truncated", onnx_sha256=sha256_of(root / "truncated" / MODEL_FILE))
    _edit_metadata(root / "wrongtypes", labels="rest", layout=[1, 2])
    (root / "no_onnx" / MODEL_FILE).unlink()
    # A valid package, but reached through a link to a folder elsewhere.
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "good"
    shutil.copytree(root / "good", elsewhere)
    (root / "outside").symlink_to(elsewhere, target_is_directory=True)
    return root


def _settings(models_dir: Path, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {"models_dir": models_dir, "model": "good", "stream_name": unique_id("security"),
                              "resolve_interval_s": 0.5, "marker_outlet": False, "lsl_config": LSL_CONFIG,
                              "admin_token": ADMIN}
    return load_settings(**{**values, **overrides})


@pytest.fixture(scope="module")
def client(models_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(models_dir))) as test_client:
        yield test_client


def _no_leak(response: httpx.Response, models_dir: Path) -> None:
    """No absolute path, host name or traceback in a body."""
    text = response.text
    for secret in {str(models_dir), str(models_dir.resolve()), str(Path.home()), socket.gethostname()}:
        assert secret not in text, f"{response.request.url.path} {response.status_code} reveals {secret!r}"
    assert "Traceback" not in text and 'File "' not in text


AUTH = {"Authorization": f"Bearer {ADMIN}"}


def test_bad_packages_are_listed_invalid_with_their_reason(client: TestClient, models_dir: Path) -> None:
    listing = client.get("/models")
    assert listing.status_code == 200
    _no_leak(listing, models_dir)
    body = listing.json()
    assert body["models_dir"] == models_dir.name and body["active"] == "good"
    rows = {row["name"]: row for row in body["models"]}
    assert set(rows) == {"good", "good2", *BAD_PACKAGES}
    assert rows["good"]["valid"] and rows["good2"]["valid"] and rows["good"]["error"] is None
    for name, reason in BAD_PACKAGES.items():
        assert rows[name]["valid"] is False and reason in rows[name]["error"], (name, rows[name]["error"])
        assert rows[name]["version"] is None
    # The verdicts are cached, and a package changed on disk is judged again.
    assert client.get("/models").json() == body
    _edit_metadata(models_dir / "good2", version="3")
    try:
        assert {row["name"]: row for row in client.get("/models").json()["models"]}["good2"]["version"] == "3"
    finally:
        _edit_metadata(models_dir / "good2", version="2")
    assert {row["name"]: row for row in client.get("/models").json()["models"]}["good2"]["version"] == "2"


def test_a_refused_package_leaves_the_previous_model_serving(client: TestClient, models_dir: Path) -> None:
    before = client.get("/models/active").json()
    for name, reason in BAD_PACKAGES.items():
        refused = client.put("/models/active", json={"name": name}, headers=AUTH)
        assert refused.status_code == 422, (name, refused.text)
        assert reason in refused.json()["detail"] and "previous model stays active" in refused.json()["detail"]
        _no_leak(refused, models_dir)
    assert client.get("/models/active").json() == before
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["model"]["name"] == "good"


@pytest.mark.parametrize("name", ["../good", "..", ".", ".hidden", "a/b", "a\\b", "a\x00b", "/etc", "",
                                  "x" * 255, "x" * 256, "x" * 60_000])
def test_names_that_are_not_folder_names_are_refused(client: TestClient, models_dir: Path, name: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        refused = client.put("/models/active", json={"name": name}, headers=AUTH)
    assert refused.status_code == 422, refused.text
    _no_leak(refused, models_dir)
    assert len(refused.content) < 2000  # the name is never echoed in full
    assert all(len(record.getMessage()) < 2000 for record in caplog.records)
    assert client.get("/models/active").json()["name"] == "good"


def test_a_body_over_the_limit_is_refused_with_413(client: TestClient, models_dir: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    huge = json.dumps({"name": "x" * 10_000_000}).encode()
    with caplog.at_level(logging.DEBUG):
        declared = client.put("/models/active", content=huge, headers={**AUTH, "Content-Type": "application/json"})
        chunked = client.put("/models/active", content=iter([huge[i:i + 65536] for i in range(0, len(huge), 65536)]),
                             headers={**AUTH, "Content-Type": "application/json"})
    for refused in (declared, chunked):
        assert refused.status_code == 413 and "larger than 65536 bytes" in refused.json()["detail"]
    assert all(len(record.getMessage()) < 2000 for record in caplog.records)
    assert client.get("/models/active").json()["name"] == "good"


def test_model_changes_need_the_admin_token(client: TestClient, models_dir: Path) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {ADMIN}"},
                    {"Authorization": f"Bearer {ADMIN}x"}, {"Authorization": "Bearer"}):
        refused = client.put("/models/active", json={"name": "good2"}, headers=headers)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer", headers
    # Without a token even an invalid body is not examined.
    assert client.put("/models/active", json={"name": "x" * 300}).status_code == 401
    swapped = client.put("/models/active", json={"name": "good2"}, headers={"authorization": f"bearer {ADMIN}"})
    assert swapped.status_code == 200 and swapped.json()["name"] == "good2"
    assert client.put("/models/active", json={"name": "good"}, headers=AUTH).json()["name"] == "good"


@pytest.mark.parametrize(("model", "reason"), [("latin1", "not UTF-8 text"), ("nested", "nested too deeply"),
                                               ("truncated", "ONNX Runtime cannot load"),
                                               ("x" * 300, "has 300 characters"), ("../good", "not a folder name")])
def test_the_server_starts_not_ready_on_a_broken_model(models_dir: Path, model: str, reason: str) -> None:
    with TestClient(create_app(_settings(models_dir, model=model))) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503 and reason in ready.json()["reason"]
        _no_leak(ready, models_dir)
        assert client.get("/health").json()["not_ready_reason"] == ready.json()["reason"]
        missing = client.get("/models/active")
        assert missing.status_code == 404 and reason in missing.json()["detail"]
        # The stream side is up, and a valid package can still be activated.
        assert client.put("/models/active", json={"name": "good"}, headers=AUTH).status_code == 200
        assert client.get("/ready").status_code == 200


def test_reads_need_the_read_token_when_one_is_set(models_dir: Path) -> None:
    with TestClient(create_app(_settings(models_dir, read_token=READER))) as client:
        for path in ("/models", "/models/active", "/streams", "/metrics", "/schema/messages"):
            refused = client.get(path)
            assert refused.status_code == 401 and "token" in refused.json()["detail"], path
            assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401, path
            assert client.get(path, params={"token": "nope"}).status_code == 401, path
            assert client.get(path, headers={"Authorization": f"Bearer {READER}"}).status_code == 200, path
            assert client.get(path, params={"token": READER}).status_code == 200, path
            assert client.get(path, headers=AUTH).status_code == 200, path  # the admin token may read too
        for open_path in ("/health", "/ready", "/docs", "/openapi.json"):
            assert client.get(open_path).status_code == 200, open_path
        # The read token cannot change state.
        refused = client.put("/models/active", json={"name": "good2"}, headers={"Authorization": f"Bearer {READER}"})
        assert refused.status_code == 401
        spec = client.get("/openapi.json").json()
        assert {"bearer", "token query"} <= set(spec["components"]["securitySchemes"])
        assert "401" in spec["paths"]["/models"]["get"]["responses"]
    # Without a read token the same routes are open, and the document says so.
    with TestClient(create_app(_settings(models_dir))) as client:
        assert client.get("/models").status_code == 200
        assert "401" not in client.get("/openapi.json").json()["paths"]["/models"]["get"]["responses"]


def test_an_unexpected_error_is_a_generic_500(client: TestClient, models_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]

    def fail() -> list[dict[str, object]]:
        raise RuntimeError(f"secret detail at {models_dir} on {socket.gethostname()}")

    monkeypatch.setattr(runtime.models, "available", fail)
    with caplog.at_level(logging.ERROR, logger="rohde.server.security"):
        failed = client.get("/models")
    assert failed.status_code == 500
    assert "secret" not in failed.text and "RuntimeError" not in failed.text
    _no_leak(failed, models_dir)
    error_id = re.search(r"error id ([0-9a-f]+)", failed.json()["detail"])
    assert error_id is not None
    logged = [r for r in caplog.records if error_id.group(1) in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None  # the traceback is in the log, once
    assert client.get("/health").status_code in (200, 503)  # the server goes on


def test_docs_load_from_the_server_without_a_cdn(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert not re.search(r"https?://|//cdn|cdn\.", page.text, flags=re.IGNORECASE), page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) == 3
    for asset in assets:
        assert asset.startswith("/docs/assets/")
        loaded = client.get(asset)
        assert loaded.status_code == 200 and len(loaded.content) > 500, asset
    assert client.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    # Only those files: the bundle's own index.html would load a demo API from the web.
    assert client.get("/docs/assets/index.html").status_code == 404
    assert client.get("/docs/assets/..%2F__init__.py").status_code == 404
    assert client.get("/redoc").status_code == 404
    assert "'/openapi.json'" in page.text and client.get("/openapi.json").status_code == 200


def test_token_checks() -> None:
    assert token_matches("abc", "abc") and not token_matches("abd", "abc") and not token_matches("ab", "abc")
    assert not token_matches(None, "abc") and not token_matches("", "") and not token_matches("abc", None)
    assert not token_matches("\udcff", "abc")  # not encodable as UTF-8: refused, not an error
    assert presented_token("Bearer t1", "t2") == "t1" and presented_token(None, "t2") == "t2"
    assert presented_token("Basic t1", None) is None and presented_token("bearer  t1 ", None) == "t1"
    assert read_refusal(None, read_token=None, admin_token="a") is None
    assert read_refusal("r", read_token="r", admin_token=None) is None
    assert read_refusal("a", read_token="r", admin_token="a") is None
    assert "token" in str(read_refusal("x", read_token="r", admin_token="a"))


@pytest.mark.parametrize(("origin", "allowed", "expected"), [
    (None, None, True),  # not a browser
    ("http://127.0.0.1:8000", None, True),
    ("http://localhost:5173", None, True),
    ("https://[::1]", None, True),
    ("http://evil.example", None, False),
    ("http://127.0.0.1.evil.example", None, False),
    ("null", None, False),
    ("file://", None, False),
    ("http://evil.example", ["*"], True),
    ("null", ["*"], True),
    ("http://app.example:8080", ["http://app.example:8080"], True),
    ("HTTP://APP.EXAMPLE:8080", ["http://app.example:8080"], True),
    ("http://app.example:8081", ["http://app.example:8080"], False),
    ("https://app.example:8080", ["http://app.example:8080"], False),
    ("http://127.0.0.1:8000", ["http://app.example"], False),  # an explicit list replaces the loopback default
    ("http://[bad", None, False),
])
def test_websocket_origins(origin: str | None, allowed: list[str] | None, expected: bool) -> None:
    assert origin_allowed(origin, allowed) is expected


def test_websocket_refusal_checks_origin_then_token() -> None:
    def refusal(headers: dict[str, str], query: dict[str, str], read_token: str | None = None) -> str | None:
        return websocket_refusal(headers, query, read_token=read_token, admin_token=ADMIN, allowed_origins=None)

    assert refusal({}, {}) is None
    assert "origin" in str(refusal({"origin": "http://evil.example"}, {}))
    assert "token" in str(refusal({}, {}, read_token=READER))
    assert refusal({}, {"token": READER}, read_token=READER) is None
    assert refusal({"authorization": f"Bearer {READER}"}, {}, read_token=READER) is None
    assert "origin" in str(refusal({"origin": "http://evil.example"}, {"token": READER}, read_token=READER))
    for reason in (refusal({"origin": "http://" + "e" * 500}, {}), refusal({}, {}, read_token=READER)):
        assert reason is not None and len(reason.encode()) <= 123  # a close frame's reason


def test_client_text_is_bounded_and_escaped_for_logs() -> None:
    assert loggable("good") == "'good'"
    assert loggable("a\nb\x1b[31m") == "'a\\nb\\x1b[31m'"
    long = loggable("x" * 10_000_000)
    assert len(long) < 100 and long.endswith("(10000000 characters)")


def test_security_settings_read_lists_and_refuse_tiny_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROHDE_ALLOWED_ORIGINS", "http://app.example:8080, https://other.example")
    monkeypatch.setenv("ROHDE_READ_TOKEN", READER)
    settings = load_settings()
    assert settings.allowed_origins == ["http://app.example:8080", "https://other.example"]
    assert settings.read_token == READER and settings.max_request_bytes == 65536 and settings.host == "127.0.0.1"
    with pytest.raises(ValueError, match="max_request_bytes"):
        load_settings(max_request_bytes=10)


def test_tokens_in_query_strings_stay_out_of_the_access_log() -> None:
    assert redact_tokens("/models?token=s3cret&x=1") == "/models?token=***&x=1"
    assert redact_tokens("/ws?stream=a&TOKEN=s3cret") == "/ws?stream=a&TOKEN=***"
    assert redact_tokens("/models?mytoken=keep") == "/models?mytoken=keep"
    # uvicorn's access record: (client, method, full path, HTTP version, status)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/streams?token=s3cret", "1.1", 200), None)
    assert TokenRedactingFilter().filter(record)
    assert "s3cret" not in record.getMessage() and "token=***" in record.getMessage()
