"""Reading Dockerfiles and .dockerignore the way Docker does, for the checks that run without a Docker engine."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, COPY, RUN, ...
    args: str  # the rest of the logical line, continuations joined
    line: int  # first physical line, 1-based


@dataclass
class Stage:
    base: str  # the FROM image expression, variables unexpanded
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def instructions(path: Path) -> list[Instruction]:
    """The logical lines of a Dockerfile: comments and parser directives dropped, `\\` continuations joined."""
    result: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are removed by Docker too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        text = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = text.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip(), start))
    return result


def stages(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(the ARGs declared before the first FROM with their defaults, the build stages in order)."""
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for ins in instructions(path):
        if ins.keyword == "FROM":
            words = ins.args.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            found.append(Stage(base=words[0], name=name))
        elif not found:
            if ins.keyword == "ARG":
                key, _, default = ins.args.partition("=")
                global_args[key.strip()] = default.strip()
        else:
            found[-1].instructions.append(ins)
    return global_args, found


@dataclass(frozen=True)
class Copy:
    sources: list[str]
    destination: str
    from_stage: str | None


def copy_of(ins: Instruction) -> Copy:
    words = shlex.split(ins.args)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
    return Copy(sources=paths[:-1], destination=paths[-1], from_stage=from_stage)


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form CMD, ENTRYPOINT or HEALTHCHECK CMD."""
    import json

    start = args.index("[")
    value = json.loads(args[start:])
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_of(stage: Stage) -> dict[str, str]:
    """ENV KEY=VALUE pairs of a stage, later ones winning."""
    env: dict[str, str] = {}
    for ins in stage.instructions:
        if ins.keyword == "ENV":
            for word in shlex.split(ins.args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


class DockerIgnore:
    """The build-context filter: Docker's .dockerignore rules (`*`, `?`, `**`, `!` exceptions, the last matching
    pattern wins, a path is excluded when it or one of its parent folders is)."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line[1:].strip() if negated else line
            pattern = pattern.strip("/")
            if pattern.startswith("./"):
                pattern = pattern[2:]
            self.rules.append((negated, re.compile(_to_regex(pattern))))

    def _matches(self, rel: str) -> bool:
        excluded = False
        for negated, regex in self.rules:
            if regex.fullmatch(rel):
                excluded = not negated
        return excluded

    def excludes(self, rel_path: str) -> bool:
        parts = Path(rel_path).parts
        return any(self._matches("/".join(parts[: i + 1])) for i in range(len(parts)))


def _to_regex(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)
