"""`rohde data detector`: precision, recall and F1 of the neighbour bad-channel detector per disturbance kind.

Protocol. Clean recordings (the embedded simulator, and real flexemg trials when given) get one
disturbance kind at a time, placed at random (`Placement`), one electrode by default as in Farago and
Chan (Sensors 2023), or a patch of a given severity. Additive kinds are scaled on every disturbed
channel so the disturbance carries the power of the clean signal under it (signal-to-disturbance ratio
0 dB over the masked samples); kinds that replace or reshape the signal (dead, saturation, bridge,
dropout, LC) keep their physical strength, and their SDR is reported as measured. The detector judges
windows of `window_ms`; a (window, channel) is truly bad when its ground-truth mask covers at least half
the window, clean when it covers none, and not scored in between (an artifact that just starts or ends).
An RMS threshold (a channel above `rms_factor` times the array's median RMS) is scored alongside, as the
single-channel reference the neighbour test replaces.

Beside the score, each kind reports how many of its truly bad (window, channel)s are faint: the disturbance
inside that window (its mean removed, as the detector removes it) carries less than a tenth of the clean
signal's power there (`faint_db`). A pop's slow recovery late in its masked span, an offset below an
amplifier's rail, or a 0 dB motion artifact inside a strong contraction are faint: the recall on the
others says how much of what a window shows the detector finds. The score itself counts every bad one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rohde.core.channel_quality import ChannelQualityDetector, DetectorConfig
from rohde.core.errors import ConfigError
from rohde.core.recording import Recording
from rohde.simulation.disturbances import DISTURBANCE_CONDITIONS, HELD_OUT_KIND, apply_disturbance
from rohde.simulation.placement import Placement

logger = logging.getLogger(__name__)

# Kinds whose disturbance adds to the EMG: scaled to the requested SDR. The others keep their own strength.
ADDITIVE_KINDS = frozenset({"CA", "powerline", "pop", "motion", "sway", "hum"})
DETECTOR_KINDS: tuple[str, ...] = tuple(k for k in DISTURBANCE_CONDITIONS if k != "powerline")  # powerline: global


@dataclass(frozen=True)
class DetectorEvalOptions:
    window_ms: float = 250.0  # detector window
    sdr_db: float = 0.0  # signal-to-disturbance ratio of additive kinds
    severity: float = 0.0  # fraction of electrodes disturbed (0: one electrode)
    shape: str = "patch"  # placement shape
    draws: int = 3  # disturbance draws per recording and kind
    window_stride: int = 1  # judge every n-th window only (1: all), to bound the run time
    rms_factor: float = 3.0  # RMS-threshold reference: above this many times the array median
    faint_db: float = 10.0  # a bad (window, channel) whose in-window SDR exceeds this is faint (diagnostic only)
    seed: int = 0


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, flagged: np.ndarray, truth: np.ndarray, scored: np.ndarray) -> None:
        self.tp += int((flagged & truth & scored).sum())
        self.fp += int((flagged & ~truth & scored).sum())
        self.fn += int((~flagged & truth & scored).sum())
        self.tn += int((~flagged & ~truth & scored).sum())

    def figures(self) -> dict[str, float]:
        precision = self.tp / max(self.tp + self.fp, 1)
        recall = self.tp / max(self.tp + self.fn, 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        return {"precision": precision, "recall": recall, "f1": f1, "tp": self.tp, "fp": self.fp, "fn": self.fn}


def scale_to_sdr(clean: np.ndarray, disturbed: np.ndarray, mask: np.ndarray, sdr_db: float) -> np.ndarray:
    """`disturbed` with each channel's disturbance (disturbed - clean) scaled to `sdr_db` over its masked samples."""
    out = disturbed.copy()
    for ch in np.flatnonzero(mask.any(axis=0)):
        on = mask[:, ch]
        d = disturbed[on, ch].astype(np.float64) - clean[on, ch]
        s_rms = np.sqrt(np.mean(clean[on, ch].astype(np.float64) ** 2))
        d_rms = np.sqrt(np.mean(d**2))
        if d_rms > 0:
            gain = s_rms / d_rms * 10 ** (-sdr_db / 20)
            out[:, ch] = clean[:, ch] + (disturbed[:, ch] - clean[:, ch]) * gain
    return out


def measured_sdr_db(clean: np.ndarray, disturbed: np.ndarray, mask: np.ndarray) -> float:
    """Power of the clean signal over the disturbance's, on the masked samples, in dB."""
    if not mask.any():
        return float("nan")
    s = float(np.mean(clean[mask].astype(np.float64) ** 2))
    d = float(np.mean((disturbed[mask].astype(np.float64) - clean[mask]) ** 2))
    return 10 * np.log10(max(s, 1e-12) / max(d, 1e-12))


def window_sdr_db(clean: np.ndarray, disturbed: np.ndarray) -> np.ndarray:
    """(C,) power of the clean window over the disturbance's in it, both with their mean removed, in dB."""
    c = clean.astype(np.float64) - clean.mean(axis=0)
    d = disturbed.astype(np.float64) - clean
    d -= d.mean(axis=0)
    return np.asarray(10 * np.log10(np.maximum((c**2).mean(axis=0), 1e-12) / np.maximum((d**2).mean(axis=0), 1e-12)))


def rms_threshold(window: np.ndarray, factor: float) -> np.ndarray:
    """(C,) bool: the single-channel reference, RMS above `factor` times the array's median RMS."""
    rms = (window - window.mean(axis=0)).std(axis=0)
    return np.asarray(rms > factor * np.median(rms))


def evaluate_detector(
    recordings: Sequence[Recording],
    *,
    kinds: Sequence[str] = DETECTOR_KINDS,
    options: DetectorEvalOptions | None = None,
    config: DetectorConfig | None = None,
) -> dict[str, dict[str, float]]:
    """Per kind (and "clean": false alarms on undisturbed windows): detector and RMS-threshold figures."""
    opt = options or DetectorEvalOptions()
    results: dict[str, dict[str, float]] = {}
    rng = np.random.default_rng(opt.seed)
    detectors: dict[tuple[str, float, int], ChannelQualityDetector] = {}
    clean_counts, clean_rms = Counts(), Counts()
    for kind in kinds:
        counts, rms_counts = Counts(), Counts()
        sdrs = []
        faint = found_plain = plain = 0
        for rec in recordings:
            n_win = max(16, int(round(opt.window_ms * rec.fs_hz / 1000.0)))
            key = (rec.layout.name, rec.fs_hz, n_win)
            if key not in detectors:
                detectors[key] = ChannelQualityDetector(rec.layout, rec.fs_hz, n_win, config)
            detector = detectors[key]
            clean = rec.samples.astype(np.float32)
            for _ in range(opt.draws):
                disturbed, mask = apply_disturbance(
                    clean, fs_hz=rec.fs_hz, layout=rec.layout, condition=kind, rng=rng,
                    placement=Placement(opt.shape, opt.severity),
                )  # fmt: skip
                if kind in ADDITIVE_KINDS:
                    disturbed = scale_to_sdr(clean, disturbed, mask, opt.sdr_db)
                sdrs.append(measured_sdr_db(clean, disturbed, mask))
                for start in range(0, clean.shape[0] - n_win + 1, n_win * opt.window_stride):
                    sl = slice(start, start + n_win)
                    share = mask[sl].mean(axis=0)
                    truth, scored = share >= 0.5, (share >= 0.5) | (share == 0)
                    verdict = detector.detect(disturbed[sl])
                    counts.add(verdict.bad, truth, scored)
                    if truth.any():
                        weak = window_sdr_db(clean[sl][:, truth], disturbed[sl][:, truth]) > opt.faint_db
                        faint += int(weak.sum())
                        plain += int((~weak).sum())
                        found_plain += int((verdict.bad[truth] & ~weak).sum())
                    rms_counts.add(rms_threshold(disturbed[sl], opt.rms_factor), truth, scored)
                    if kind == kinds[0] and _ == 0:  # false alarms on the clean windows, once per recording
                        nothing = np.zeros_like(truth)
                        clean_counts.add(detector.detect(clean[sl]).bad, nothing, np.ones_like(truth))
                        clean_rms.add(rms_threshold(clean[sl], opt.rms_factor), nothing, np.ones_like(truth))
        figures = counts.figures()
        results[kind] = {
            **figures,
            "rms_f1": rms_counts.figures()["f1"],
            "sdr_db": float(np.nanmedian(sdrs)) if sdrs else float("nan"),
            "held_out": float(kind == HELD_OUT_KIND),
            "faint_share": faint / max(faint + plain, 1),
            "recall_not_faint": found_plain / max(plain, 1),
        }
        logger.info("detector %s: F1 %.3f (P %.3f R %.3f), RMS threshold F1 %.3f", kind, figures["f1"],
                    figures["precision"], figures["recall"], results[kind]["rms_f1"])  # fmt: skip
    n_clean = clean_counts.fp + clean_counts.tn
    results["clean"] = {
        "false_alarm_rate": clean_counts.fp / max(n_clean, 1),
        "rms_false_alarm_rate": clean_rms.fp / max(clean_rms.fp + clean_rms.tn, 1),
    }
    return results


def format_detector_table(title: str, results: dict[str, dict[str, float]]) -> str:
    lines = [f"### {title}", "",
             "| kind | SDR (dB) | precision | recall | F1 | RMS-threshold F1 | faint | recall, not faint |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for kind, r in results.items():
        if kind == "clean":
            continue
        name = f"{kind} (held out)" if r.get("held_out") else kind
        lines.append(f"| {name} | {r['sdr_db']:.1f} | {100 * r['precision']:.1f} % | {100 * r['recall']:.1f} % | "
                     f"{100 * r['f1']:.1f} % | {100 * r['rms_f1']:.1f} % | {100 * r.get('faint_share', 0.0):.0f} % | "
                     f"{100 * r.get('recall_not_faint', 0.0):.1f} % |")  # fmt: skip
    if "clean" in results:
        c = results["clean"]
        lines += ["", f"False alarms on clean windows: detector {100 * c['false_alarm_rate']:.2f} % of "
                      f"channel-windows, RMS threshold {100 * c['rms_false_alarm_rate']:.2f} %."]  # fmt: skip
    return "\n".join(lines)


def detector_report(
    out_dir: Path, *, flexemg: Path | None = None, options: DetectorEvalOptions | None = None, n_flexemg: int = 4
) -> dict[str, dict[str, dict[str, float]]]:
    """Run the protocol on the embedded simulator (and flexemg trials) and write `detector.md` and `detector.json`."""
    from rohde.core.datasets import find_recordings, load_any
    from rohde.simulation.simulator import SimulatorConfig, simulate_recording

    opt = options or DetectorEvalOptions()
    config = SimulatorConfig(repetitions=1, rest_s=1.0, gesture_s=2.0)
    sets = {"simulator (3 x 8 x 8, 2048 Hz)": [
        simulate_recording(config=config, subject=s, session=1, trial=1, condition="clean", seed=opt.seed)
        for s in (1, 2)
    ]}  # fmt: skip
    if flexemg is not None:
        paths = find_recordings(flexemg)
        if not paths:
            raise ConfigError(f"No flexemg trial found under {str(flexemg)!r}.")
        step = max(1, len(paths) // n_flexemg)
        sets["flexemg (16 x 4, 1000 Hz, real)"] = [load_any(p) for p in paths[::step][:n_flexemg]]
    results = {name: evaluate_detector(recs, options=opt) for name, recs in sets.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    head = (
        f"# Bad-channel detector: precision, recall and F1 per disturbance kind\n\n"
        f"Written by `rohde data detector`. Windows of {opt.window_ms:g} ms (every {opt.window_stride}. judged), "
        f"{opt.draws} draws per recording and kind, placement `{opt.shape}` at severity {opt.severity:g} "
        f"(0 = one electrode), additive kinds at {opt.sdr_db:g} dB signal-to-disturbance; the others at their "
        "own strength (SDR as measured). A (window, channel) is bad when its ground-truth mask covers at least "
        "half the window, clean when none, unscored in between. Real flexemg trials carry artifacts of their own "
        "that count as false alarms here. `faint`: share of the bad (window, channel)s whose disturbance inside "
        f"the window (mean removed) is more than {opt.faint_db:g} dB below the clean signal there; the last column is "
        "the recall on the others (a diagnostic: the score counts every bad one).\n"
    )
    tables = [format_detector_table(name, r) for name, r in results.items()]
    (out_dir / "detector.md").write_text(head + "\n" + "\n\n".join(tables) + "\n")
    (out_dir / "detector.json").write_text(json.dumps({"options": asdict(opt), "results": results}, indent=2))
    return results
