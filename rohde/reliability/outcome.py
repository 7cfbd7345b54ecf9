"""One case's measured outcome: its checks, each with a verdict, and the figures of the report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Check:
    """One stated expectation and whether the run met it."""

    name: str
    passed: bool
    detail: str  # the measured value against the limit, in words


@dataclass
class Outcome:
    """What one case measured. `verdict` is computed from `checks`; no check means not run."""

    group: str
    case: str
    expectation: str
    checks: list[Check] = field(default_factory=list)
    recovery_s: float | None = None  # fault end -> first accepted decision (None: no fault with an end)
    windows_lost: int | None = None  # decision sequence gaps seen by clients + windows emitted but not run
    windows_counted: int | None = None  # what the server counted: shed + dropped + WebSocket drops
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None
    bad_values: int = 0  # 5xx answers, non-finite or null numbers seen in messages
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # the case itself could not run to its end
    wall_s: float = math.nan

    def check(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(name, bool(passed), detail))
        return bool(passed)

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "fail"
        if not self.checks:
            return "not run"
        return "pass" if all(c.passed for c in self.checks) else "fail"

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]
