"""The child-process harness with tiny real subprocesses (`python -c ...`); no LSL involved."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from rohde.core.errors import RohdeError
from rohde.server.processes import ChildGroup, child_env, free_port, start_child, unique_id, wait_for_port

pytestmark = pytest.mark.timeout(60)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_wait_for_port_returns_the_written_port(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    # Written as `rohde serve --port-file` writes it: to a temporary name, then renamed into place.
    code = (f"import pathlib, time; time.sleep(0.3); tmp = pathlib.Path({str(port_file)!r} + '.tmp'); "
            f"tmp.write_text('8123\\n'); tmp.replace({str(port_file)!r}); time.sleep(30)")
    with start_child(python(code), log=tmp_path / "child.log") as child:
        assert child.wait_for_port(port_file, timeout_s=20) == 8123
        assert child.process.poll() is None
    assert child.process.returncode is not None


def test_a_child_that_dies_fails_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "dying.log"
    code = "import sys; print('starting up', flush=True); sys.exit('no model here')"
    with start_child(python(code), log=log) as child, pytest.raises(RohdeError) as failed:
        child.wait_for_port(tmp_path / "port", timeout_s=20)
    message = str(failed.value)
    assert str(log) in message and "exited with code 1" in message
    assert "starting up" in message and "no model here" in message


def test_a_silent_child_times_out_naming_its_log(tmp_path: Path) -> None:
    log = tmp_path / "silent.log"
    with start_child(python("import time; print('waiting', flush=True); time.sleep(30)"), log=log) as child:
        with pytest.raises(RohdeError) as failed:
            wait_for_port(tmp_path / "port", [child], timeout_s=1.0)
    assert str(log) in str(failed.value) and "waiting" in str(failed.value)


def test_stop_is_idempotent_and_kills_a_child_ignoring_sigterm(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    stubborn = ("import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                f"pathlib.Path({str(ready)!r}).write_text('1'); time.sleep(60)")
    with ChildGroup() as group:
        polite = group.start(python("import time; time.sleep(60)"), log=tmp_path / "polite.log")
        ignoring = group.start(python(stubborn), log=tmp_path / "stubborn.log")
        ignoring.wait_for_file(ready, timeout_s=20)
        started = time.monotonic()
        group.stop(timeout_s=1.0)
        assert time.monotonic() - started < 8
        assert polite.process.returncode == -15  # SIGTERM
        assert ignoring.process.returncode == -9  # SIGKILL after the timeout
        group.stop(timeout_s=1.0)  # a second stop (and the one at exit) does nothing
        ignoring.stop()
    assert ignoring.process.returncode == -9


def test_child_env_keeps_a_given_lsl_config_and_drops_the_server_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LSLAPICFG", "/elsewhere/lsl.cfg")
    monkeypatch.setenv("ROHDE_CONFIG", "/some/server.toml")
    env = child_env({"ROHDE_PORT": "1234"})
    assert env["LSLAPICFG"] == "/elsewhere/lsl.cfg" and "ROHDE_CONFIG" not in env and env["ROHDE_PORT"] == "1234"
    monkeypatch.delenv("LSLAPICFG")
    assert Path(child_env()["LSLAPICFG"]).name == "lsl_loopback.cfg"


def test_unique_ids_and_free_ports() -> None:
    assert unique_id("s") != unique_id("s") and unique_id("s").startswith("s-")
    assert 0 < free_port() < 65536
