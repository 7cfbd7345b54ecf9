"""The WebSocket route against a real `rohde serve` subprocess and a real outlet: client frames of any kind,
oversized frames, unknown `?stream=` ids and over-long upgrade requests are answered, never left hanging."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from rohde.server.processes import ChildGroup, unique_id

from .conftest import ModelSet, RunningOutlet
from .test_e2e import start_server

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(120)]


def close_answer(ws: ClientConnection, timeout_s: float = 10.0) -> tuple[int, str] | None:
    """Read until the server closes; its close code and reason, None for a drop without a close frame."""
    deadline = time.monotonic() + timeout_s
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.05, deadline - time.monotonic()))
        raise AssertionError(f"the server did not close within {timeout_s} s")
    received = closed.value.rcvd
    return None if received is None else (received.code, received.reason)


def closed_with(ws: ClientConnection, timeout_s: float = 10.0) -> tuple[int, str]:
    """Read until the server closes; its close code and reason (a drop without a close frame fails)."""
    answer = close_answer(ws, timeout_s)
    assert answer is not None, "the connection dropped without a close frame"
    return answer


def raw_upgrade(port: int, path: str, *, extra_headers: str = "") -> tuple[float, bytes]:
    """Send a WebSocket upgrade request over a raw socket; the seconds until the answer, and its first line."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as sock:
        started = time.monotonic()
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return time.monotonic() - started, answer.split(b"\r\n", 1)[0]


@pytest.fixture
def served(tmp_path: Path, model_set: ModelSet, processes: ChildGroup,
           lsl_outlet: Callable[..., RunningOutlet]) -> tuple[int, str]:
    """A server on a replayed stream; (port, stream id)."""
    name = unique_id("wsfault")
    lsl_outlet("replay", str(model_set.recording.save(tmp_path / "replay")), name=name, source_id=name)
    base = start_server(processes, tmp_path, model_set, name)
    return int(base.rsplit(":", 1)[1]), name


def test_client_frames_are_refused_with_a_close_frame(served: tuple[int, str]) -> None:
    port, name = served
    for payload in (b"\x00\x01binary", "text from a client"):
        with connect(f"ws://127.0.0.1:{port}/ws?stream={name}") as ws:
            assert json.loads(ws.recv(timeout=10))["event"] == "hello"
            ws.send(payload)
            code, reason = closed_with(ws)
        assert code == 1003 and ("binary" if isinstance(payload, bytes) else "text") in reason
    with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
        ws.send(b"x" * 1_000_000)
        code, _ = closed_with(ws)
    assert code == 1009  # refused by the WebSocket layer before the message is buffered


def test_unknown_stream_id_is_refused_and_a_known_one_served(served: tuple[int, str]) -> None:
    port, name = served
    with connect(f"ws://127.0.0.1:{port}/ws?stream={name}") as ws:
        messages = [json.loads(ws.recv(timeout=10)) for _ in range(3)]
    assert messages[0]["event"] == "hello" and all(m["stream_id"] == name for m in messages)
    started = time.monotonic()
    with connect(f"ws://127.0.0.1:{port}/ws?stream=no-such-stream") as ws:
        code, reason = closed_with(ws, timeout_s=20.0)
    assert code == 1008 and "knows 1 stream id" in reason
    assert time.monotonic() - started < 10.0


@pytest.mark.parametrize(("path_chars", "header_chars", "status"), [(9000, 0, b"414"), (70_000, 0, b"414"),
                                                                    (0, 9000, b"431")])
def test_oversized_upgrade_request_gets_an_answer_at_once(served: tuple[int, str], path_chars: int,
                                                         header_chars: int, status: bytes) -> None:
    port, name = served
    seconds, status_line = raw_upgrade(port, f"/ws?stream={name}&pad={'a' * path_chars}",
                                       extra_headers=f"X-Pad: {'b' * header_chars}\r\n" if header_chars else "")
    assert status_line.startswith(b"HTTP/1.1 " + status), status_line
    assert seconds < 2.0
    seconds, status_line = raw_upgrade(port, f"/ws?stream={name}")  # the server still answers normally
    assert status_line.startswith(b"HTTP/1.1 101"), status_line


def test_binary_frames_get_a_1003_close_frame_every_time(served: tuple[int, str]) -> None:
    """A client frame races the sender (the hello, then the live stream's messages): each of 30 tries gets a
    close frame 1003, whether the frame comes right after the handshake, while the hello is queued (the
    receiver and the sender then finish in the same loop turn), or once the stream's messages flow."""
    port, name = served
    answers: list[tuple[int, str] | None] = []
    for attempt in range(30):
        with connect(f"ws://127.0.0.1:{port}/ws?stream={name}") as ws:
            if attempt % 2:
                assert json.loads(ws.recv(timeout=10))["event"] == "hello"
                ws.recv(timeout=10)  # a prediction: the sender is busy with the live stream
            ws.send(b"\x00\x01\x02\xff")
            answers.append(close_answer(ws))
    refused = [a for a in answers if a is not None and a[0] == 1003 and "binary" in a[1]]
    assert len(refused) == len(answers), f"{len(answers) - len(refused)} of 30 not closed with 1003: {answers}"
