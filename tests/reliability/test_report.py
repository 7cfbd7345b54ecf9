"""`rohde reliability` end to end on a fast subset: real server, outlet and clients through the real
command path; the report's table holds measured values and the verdicts are computed (an impossible
limit fails its case)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rohde.core.errors import ConfigError
from rohde.reliability.cases import CASES, NOT_COVERED, select
from rohde.reliability.config import parse_limits


def _row(report: str, case: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith(f"| {case} |"))
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_unknown_cases_and_limits_are_refused() -> None:
    with pytest.raises(ConfigError, match="Unknown reliability cases"):
        select(("streams:no_such_case",))
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_limits(["no_such_limit=1"])
    assert {c.group for c in select(("soak",))} == {"soak"}
    assert parse_limits(["recovery_s=0.5"]).recovery_s == 0.5


@pytest.mark.lsl
@pytest.mark.timeout(240)
def test_fast_subset_renders_measured_verdicts(tmp_path: Path) -> None:
    out = tmp_path / "reliability.md"
    # exit_s=0 is impossible: no process exits in no time, so the sigterm case must fail on that check.
    cmd = [sys.executable, "-m", "rohde.cli", "reliability", "--quick", "--out", str(out),
           "--only", "streams:nan,models:package_lying,process:sigterm", "--limit", "exit_s=0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=230)
    assert out.exists(), done.stderr[-3000:]
    report = out.read_text()
    assert done.returncode == 1, "a failed case makes the command fail"
    assert "rohde reliability --quick" in report and "logical CPUs" in report

    nan = _row(report, "nan")
    assert nan[2] in ("**pass**",) or nan[2].startswith("**FAIL**"), nan
    assert re.fullmatch(r"\d+\.\d\d", nan[3]), f"recovery is measured: {nan[3]}"
    assert re.fullmatch(r"\d+ / \d+", nan[4]), f"windows lost / counted are measured: {nan[4]}"
    assert re.fullmatch(r"\d+\.\d -> \d+\.\d", nan[5]), f"RSS before and after are measured: {nan[5]}"
    assert "non-finite samples" in nan[6]

    lying = _row(report, "package_lying")
    assert "PUT answered" in lying[6] and re.search(r"RSS \d+\.\d -> \d+\.\d MB", lying[6])

    sigterm = _row(report, "sigterm")
    assert sigterm[2].startswith("**FAIL**") and "exits in time" in sigterm[2], sigterm
    assert re.search(r"exited \d+\.\d\d s after SIGTERM \(limit 0 s\)", sigterm[6]), sigterm[6]

    not_selected = [c for c in CASES if c.key not in {"streams:nan", "models:package_lying", "process:sigterm"}]
    for case in not_selected:
        assert _row(report, case.name)[2] == "not run"
    assert f"{len(not_selected)} not run." in report  # counted apart, never as passed
    assert ("## Not covered by a case yet" in report) == bool(NOT_COVERED)
