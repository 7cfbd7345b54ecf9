"""Every case of the matrix, in report order: its group, name, stated expectation and body.

An expectation is a template filled from the run's `Limits`, so the report states the very
threshold its verdict used.
"""

from __future__ import annotations

from dataclasses import dataclass

from rohde.core.errors import ConfigError
from rohde.reliability import cli_stop, clients, models, process, soak, streams
from rohde.reliability.config import GROUPS
from rohde.reliability.rig import CaseBody

SIGNAL = ("no non-finite or null value; no accepted decision on a window holding more than {detect_s:g} s of "
          "faulty input, nor other than rest on noise; "
          "first accepted decision within {recovery_s:g} s of the fault's end; loss counted")


@dataclass(frozen=True)
class CaseDef:
    group: str
    name: str
    expectation: str  # template over the Limits' field names
    run: CaseBody

    @property
    def key(self) -> str:
        return f"{self.group}:{self.name}"


CASES: tuple[CaseDef, ...] = (
    CaseDef("clients", "ws_churn", "churning clients all served; a steady client loses nothing uncounted and gets "
            ">= {min_delivery:.0%} of its decisions; RSS grows <= {churn_rss_growth_mb:g} MB from after a warm-up "
            "churn of the same clients (the first churn raises RSS once to a plateau)", clients.churn),
    CaseDef("clients", "never_read", "a steady client still gets every message (>= {min_delivery:.0%}, no "
            "uncounted gap); RSS grows <= {rss_growth_mb:g} MB", clients.never_read),
    CaseDef("clients", "bad_frames", "malformed, binary and 4 MiB frames: service or a close frame, never a bare "
            "drop; a 9 KB upgrade line answered within {answer_s:g} s; the stream goes on", clients.bad_frames),
    CaseDef("clients", "http_load", "/health and /streams flooded at the asked rate (the achieved rate stated beside "
            "it): no 5xx or transport error; a steady client gets >= {min_delivery:.0%} of its decisions, loss "
            "counted", clients.http_load),
    *(CaseDef("models", f"package_{how}", "PUT as active: refused with 4xx; GET /models answers; the previous "
              "model stays; the stream never stops (no silence >= 1 s)", models.broken_case(how))
      for how in models.BROKEN),
    CaseDef("models", "hot_swap", "a PUT every second between two packages under load: all accepted; every "
            "decision's labels are its named model's; each model generation is one model and never goes back "
            "per stream; no stream stops; loss counted", models.hot_swap),
    CaseDef("streams", "restart_same_source_id", "outlet SIGKILLed, a new one with the same source_id: same "
            "stream id, one stream, first accepted decision within {recovery_s:g} s",
            streams.restart_case(new_source_id=False)),
    CaseDef("streams", "restart_new_source_id", "outlet SIGKILLed, a new one with a new source_id: same stream "
            "id, one stream, first accepted decision within {recovery_s:g} s",
            streams.restart_case(new_source_id=True)),
    CaseDef("streams", "stall", "outlet silent without closing: announced lost within {lost_after_s:g} s, "
            "decisions again within {recovery_s:g} s of its return", streams.signal_case("stall")),
    CaseDef("streams", "hung_process", "outlet process SIGSTOPped, then SIGCONT: announced lost within "
            "{lost_after_s:g} s, decisions again within {recovery_s:g} s", streams.hang_case),
    CaseDef("streams", "drift_plus_1000ppm", "clock 1000 ppm fast: decisions keep coming (>= {min_delivery:.0%}), "
            "no sample counted missing, stays connected", streams.timing_case(ppm=1000.0)),
    CaseDef("streams", "drift_minus_1000ppm", "clock 1000 ppm slow: decisions keep coming (>= {min_delivery:.0%}), "
            "no sample counted missing, stays connected", streams.timing_case(ppm=-1000.0)),
    CaseDef("streams", "jitter", "pushes late by 0-8 ms and stamped on arrival: decisions keep coming, no sample "
            "counted missing, stays connected", streams.timing_case(jitter_ms=8.0)),
    CaseDef("streams", "burst", "a second of samples held back and sent at once: nothing counted missing; "
            "decisions within {recovery_s:g} s", streams.signal_case("burst")),
    CaseDef("streams", "gap", "samples skipped: the gap counted as missing samples; decisions again within "
            "{recovery_s:g} s", streams.signal_case("gap")),
    *(CaseDef("streams", kind, SIGNAL, streams.signal_case(kind))
      for kind in ("nan", "inf", "huge", "zero", "saturated")),
    CaseDef("streams", "shape_mismatch", "an 8-channel stream for a 16-channel model: refused with a reason in "
            "/streams, no decision, server healthy", streams.shape_case),
    CaseDef("process", "sigterm", "SIGTERM while streaming: exit within {exit_s:g} s, cleanly (code 0 or the re-raised "
            "SIGTERM); every client "
            "gets a close frame; every worker thread joined", process.sigterm),
    CaseDef("process", "restart_same_state", "stopped and started with the same settings: same model, readiness, "
            "stream and decision settings; deciding within {restart_s:g} s", process.restart),
    CaseDef("process", "cli_sigterm", "`rohde simulate` (three times), `rohde replay FILE`, the bench outlet and "
            "`rohde demo` sent SIGTERM while streaming: each exits within {exit_s:g} s and its outlet is no longer "
            "advertised; the demo's simulator and server are gone too", cli_stop.cli_sigterm),
    CaseDef("soak", "soak", "shipped model, 192 ch at 2048 Hz: mean RSS of the last segment within "
            "+{soak_rss_growth_mb:g} MB of the first; inference-queue depth does not grow (last-segment mean within "
            "+{queue_growth:g} of the first); loss only what the server counts", soak.soak),
)

# Parts of the matrix no case covers yet: listed in the report as not run, never as passed.
NOT_COVERED: tuple[tuple[str, str], ...] = ()


def select(only: tuple[str, ...]) -> list[CaseDef]:
    """The cases named by GROUP or GROUP:CASE entries (all when empty); unknown names are refused."""
    if not only:
        return list(CASES)
    keys = {c.key for c in CASES}
    unknown = [o for o in only if o not in GROUPS and o not in keys]
    if unknown:
        raise ConfigError(f"Unknown reliability cases {unknown}; give groups {list(GROUPS)} or GROUP:CASE names "
                          f"such as {CASES[0].key}.")
    return [c for c in CASES if c.group in only or c.key in only]
