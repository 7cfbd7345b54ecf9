"""One `rohde reliability` run: the selected cases in turn, each in a folder of its own, then the report."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from rohde.bench.config import LSL_CONFIG
from rohde.bench.machine import machine_description
from rohde.reliability.cases import CASES, NOT_COVERED, select
from rohde.reliability.config import ReliabilityConfig
from rohde.reliability.outcome import Outcome
from rohde.reliability.report import render
from rohde.reliability.rig import CaseContext

logger = logging.getLogger(__name__)


def run_reliability(config: ReliabilityConfig) -> list[Outcome]:
    """Run the selected cases (the others are reported as not run) and write `config.out`."""
    os.environ.setdefault("LSLAPICFG", str(LSL_CONFIG))
    selected = {c.key for c in select(config.only)}
    machine = machine_description()
    date_utc = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    limits = asdict(config.limits)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="rohde-reliability-") as tmp:
        for case in CASES:
            out = Outcome(case.group, case.name, case.expectation.format(**limits))
            outcomes.append(out)
            if case.key not in selected:
                out.notes.append("not selected by --only")
                continue
            workdir = Path(tmp) / f"{case.group}-{case.name}"
            workdir.mkdir()
            logger.info("Case %s ...", case.key)
            t = time.monotonic()
            try:
                case.run(CaseContext(workdir, config.durations, config.limits), out)
            except Exception as exc:  # one case failing to run is its verdict, not the end of the run
                logger.exception("Case %s could not run to its end.", case.key)
                out.error = f"{type(exc).__name__}: {exc}"
            out.wall_s = time.monotonic() - t
            logger.info("Case %s: %s in %.0f s%s", case.key, out.verdict, out.wall_s,
                        "".join(f"\n  failed {c.name}: {c.detail}" for c in out.failed_checks))
    config.out.parent.mkdir(parents=True, exist_ok=True)
    config.out.write_text(render(outcomes, config, date_utc=date_utc, wall_s=time.monotonic() - started,
                                 machine=machine, not_covered=NOT_COVERED))
    return outcomes
