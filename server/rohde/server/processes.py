"""Child processes on loopback LSL: started with a log file, waited for, always stopped.

One harness for every place that runs RoHDE parts as separate processes (`rohde demo`, `rohde bench`,
the integration tests): a child gets the same LSL configuration as its parent, writes its output to a
log file, and announces readiness by writing a file (the server's `--port-file`, an outlet's ready
file). A child that dies or stays silent fails with the tail of its log in the error.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from rohde.core.errors import RohdeError
from rohde.server.settings import default_lsl_config

logger = logging.getLogger(__name__)

LOG_TAIL_CHARS = 2000  # how much of a child's log an error shows


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: this process's, with `LSLAPICFG` set to the shipped loopback
    configuration unless already set (parent and children must share one), no inherited
    `ROHDE_CONFIG`, then `extra`."""
    env = dict(os.environ)
    env.setdefault("LSLAPICFG", str(default_lsl_config()))
    env.pop("ROHDE_CONFIG", None)
    env.update(extra or {})
    return env


def unique_id(prefix: str) -> str:
    """`prefix` plus 8 random hex digits: a stream name or source_id no other run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """One running child process whose stdout and stderr go to `log`; a context manager that stops it."""

    def __init__(self, process: subprocess.Popen[bytes], command: Sequence[str], log: Path) -> None:
        self.process = process
        self.command = list(command)
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def describe(self) -> str:
        return f"The child process `{shlex.join(self.command)}`"

    def log_tail(self, n_chars: int = LOG_TAIL_CHARS) -> str:
        try:
            return self.log.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def wait_for_file(self, path: Path, *, timeout_s: float) -> str:
        return wait_for_file(path, [self], timeout_s=timeout_s)

    def wait_for_port(self, port_file: Path, *, timeout_s: float = 60.0) -> int:
        return wait_for_port(port_file, [self], timeout_s=timeout_s)

    def stop(self, *, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; safe to call more than once."""
        stop_children([self], timeout_s=timeout_s)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_child(command: Sequence[str | Path], *, log: Path, extra_env: Mapping[str, str] | None = None) -> Child:
    """Start `command` with `child_env(extra_env)`, its output (stdout and stderr) written to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    args = [str(a) for a in command]
    with log.open("wb") as out:  # the child holds its own descriptor; ours closes once it has started
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=child_env(extra_env))
    logger.debug("Started pid %d: %s (log %s).", process.pid, shlex.join(args), log)
    return Child(process, args, log)


def stop_children(children: Sequence[Child], *, timeout_s: float = 10.0) -> None:
    """SIGTERM every running child (the last started first), wait up to `timeout_s` in all, then
    SIGKILL those still running. Children that already exited are only reaped; safe to repeat."""
    running = [c for c in reversed(children) if c.process.poll() is None]
    for child in running:
        child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for child in running:
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.1f s of SIGTERM; killing it.", child.describe(), timeout_s)
            child.process.kill()
            child.process.wait(timeout=5.0)


def wait_for_file(path: Path, children: Sequence[Child], *, timeout_s: float, poll_s: float = 0.05) -> str:
    """The text of `path` once it exists. Fails, with the child's log tail, when one of `children`
    exits first or nothing appears within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if path.exists():
            return path.read_text()
        exited = next((c for c in children if c.process.poll() is not None), None)
        if exited is not None:
            if path.exists():  # written just before the child exited
                return path.read_text()
            raise RohdeError(f"{exited.describe()} exited with code {exited.process.returncode} before writing "
                             f"{path}; its log {exited.log} ends with:\n{exited.log_tail()}")
        if time.monotonic() >= deadline:
            tails = "\n".join(f"{c.log}:\n{c.log_tail()}" for c in children)
            raise RohdeError(f"{path} did not appear within {timeout_s:g} s; the children's logs end with:\n{tails}")
        time.sleep(poll_s)


def wait_for_port(port_file: Path, children: Sequence[Child], *, timeout_s: float = 60.0) -> int:
    """The port a server wrote to `port_file` (`rohde serve --port-file`), as `wait_for_file` waits for it."""
    return int(wait_for_file(port_file, children, timeout_s=timeout_s).strip())


class ChildGroup:
    """Children started together and stopped together (SIGTERM to all, the last started first)."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def start(self, command: Sequence[str | Path], *, log: Path, extra_env: Mapping[str, str] | None = None) -> Child:
        child = start_child(command, log=log, extra_env=extra_env)
        self.children.append(child)
        return child

    def stop(self, *, timeout_s: float = 10.0) -> None:
        stop_children(self.children, timeout_s=timeout_s)

    def __enter__(self) -> ChildGroup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
