"""The real server in a subprocess (`rohde serve`), and what the bench asks it over HTTP."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rohde.core.errors import RohdeError
from rohde.server.processes import Child, start_child, unique_id


@dataclass(frozen=True)
class ServerHandle:
    child: Child
    url: str  # http://127.0.0.1:PORT
    ws_url: str  # ws://127.0.0.1:PORT


@contextmanager
def running_server(*, model: Path, stream_name: str, max_streams: int, workdir: Path,
                   overrides: Mapping[str, str], source_ids: Sequence[str] = ()) -> Iterator[ServerHandle]:
    """`rohde serve` on a free port for streams named `stream_name` (and, given `source_ids`, only those: one
    replica's share), with `ROHDE_*` `overrides`."""
    port_file = workdir / unique_id("port")
    cmd = [sys.executable, "-m", "rohde.cli", "serve", "--port", "0", "--port-file", str(port_file),
           "--models-dir", str(model.parent), "--model", model.name, "--stream-name", stream_name,
           "--max-streams", str(max_streams)]
    if source_ids:
        cmd += ["--stream-source-id", ",".join(source_ids)]
    with start_child(cmd, log=workdir / f"{port_file.name}-{stream_name}.log", extra_env=overrides) as child:
        port = child.wait_for_port(port_file, timeout_s=60.0)
        yield ServerHandle(child, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")


def http_json(url: str) -> Any:
    import httpx

    return httpx.get(url, timeout=10.0).json()


def http_text(url: str) -> str:
    import httpx

    return httpx.get(url, timeout=10.0).text


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (only what the bench reads)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                values[key] = float(value)
            except ValueError:
                continue
    return values


def wait_connected(server: ServerHandle, source_ids: Sequence[str], timeout_s: float) -> dict[str, str]:
    """source_id -> stream_id once every stream is connected."""
    deadline = time.monotonic() + timeout_s
    wanted = set(source_ids)
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        streams = http_json(server.url + "/streams")["streams"]
        last = {s["source_id"]: s["stream_id"] for s in streams if s["state"] == "connected"}
        if wanted <= set(last):
            return {sid: last[sid] for sid in source_ids}
        time.sleep(0.25)
    raise RohdeError(f"Only {len(wanted & set(last))} of {len(wanted)} streams connected within {timeout_s:g} s.")
