"""`rohde study gan-patches`: the patch GAN against the naive and the untrained generator, per kind.

Protocol (reduced so one run fits in minutes on 2 CPU cores; the reduction is written into the report):

- Data: the embedded simulator, one subject, 3 x 8 x 8 at 2048 Hz, short trials. Training patches come
  from session 1 (`train_trials` clean trials, each disturbed `copies` times per kind with new draws),
  held-out patches from session 2 (`val_trials` trials, their own draws): another electrode donning,
  other disturbance draws, never seen in training. Every kind is placed at random
  (`Placement("patch", severity)`), and patches are cut where the ground-truth mask is set
  (`extract_patches`).
- Candidates, each asked for as many patches as the held-out half B holds and compared with the
  held-out half A on every metric of `rohde.training.gan_quality.METRICS`: `gan` (trained), `untrained`
  (the same network, seed and scaling, no training step), `naive` (Gaussian noise with half B's
  spectrum: it is built from held-out data, so its spectrum is right by construction) and `real` (half B
  itself, the floor). Mean and standard deviation over seeds (each seed redraws the GAN's initialisation
  and training, and the split of the held-out patches).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.errors import ConfigError
from rohde.core.recording import Recording
from rohde.simulation.disturbances import apply_disturbance, ensure_trainable
from rohde.simulation.placement import Placement
from rohde.simulation.simulator import SimulatorConfig, simulate_recording
from rohde.training.gan_models import GANConfig
from rohde.training.gan_patches import (
    PATCH_KINDS,
    REPLACING_KINDS,
    PatchGAN,
    PatchShape,
    patch_sources,
    train_patch_gan,
)
from rohde.training.gan_quality import METRICS, compare_to_real

logger = logging.getLogger(__name__)

REFERENCES = ("gan", "untrained", "clean", "naive", "real")


@dataclass(frozen=True)
class PatchStudyConfig:
    seeds: int = 3  # independent GAN trainings (and splits of the held-out patches)
    kinds: tuple[str, ...] = PATCH_KINDS  # trainable kinds to generate
    train_trials: int = 2  # clean trials of session 1 that give training patches
    val_trials: int = 1  # clean trials of session 2 that give the held-out patches
    copies: int = 8  # disturbed draws per trial and kind
    severity: tuple[float, float] = (0.08, 0.15)  # share of electrodes of each drawn patch placement
    patch_rows: int = 3  # sites of a patch along the grid's columns
    patch_cols: int = 3  # sites of a patch along the grid's rows
    hop_ms: float = 31.25  # time between extracted patches
    max_patches: int = 1500  # per kind and split, drawn at random from all extracted ones
    # The GAN: 62.5 ms patches, the region GAN's networks at a CPU-sized width.
    gan: GANConfig = GANConfig(segment_ms=62.5, latent_dim=16, batch_size=32, steps=400, g_width=16, c_width=16,
                               n_up=4, n_down=4, lr=5e-4, progress=False, log_interval=50,
                               checkpoint_interval=10_000)  # fmt: skip
    simulator: SimulatorConfig = SimulatorConfig(rest_s=0.5, gesture_s=1.0, ramp_s=0.3, repetitions=1)

    def __post_init__(self) -> None:
        for kind in self.kinds:
            ensure_trainable(kind)  # the held-out kind is refused with its own error
            if kind not in PATCH_KINDS:
                raise ConfigError(
                    f"PatchStudyConfig.kinds: {kind!r} is not generated; choose from {list(PATCH_KINDS)}."
                )
        if self.seeds < 1 or self.train_trials < 1 or self.val_trials < 1 or self.copies < 1:
            raise ConfigError("PatchStudyConfig needs seeds, train_trials, val_trials and copies of at least 1.")


def _disturbed(config: PatchStudyConfig, clean: list[Recording], session: int, kind_index: int, kind: str
               ) -> list[tuple[Recording, Recording]]:  # fmt: skip
    """(disturbed, clean) pairs: `copies` draws of `kind` at random positions on each clean trial."""
    pairs = []
    for trial, rec in enumerate(clean):
        for copy in range(config.copies):
            rng = np.random.default_rng([session, trial, kind_index, copy])
            samples, mask = apply_disturbance(rec.samples, fs_hz=rec.fs_hz, layout=rec.layout, condition=kind,
                                              rng=rng, placement=Placement("patch", config.severity))  # fmt: skip
            pairs.append((rec.with_samples(samples, condition=kind, disturbance_mask=mask), rec))
    return pairs


def collect_patches(config: PatchStudyConfig, session: int, trials: int
                    ) -> tuple[dict[str, dict[str, np.ndarray]], float]:  # fmt: skip
    """`{kind: {"target", "recorded", "clean"}}` aligned `(N, rows * cols, T)` uV patches of one session's
    disturbed trials (`rohde.training.gan_patches.patch_sources`), and the sampling rate."""
    clean = [simulate_recording(config=config.simulator, subject=1, session=session, trial=t, seed=0)
             for t in range(1, trials + 1)]  # fmt: skip
    return patches_of(config, clean, session), config.simulator.fs_hz


def patches_of(config: PatchStudyConfig, clean: list[Recording], session: int) -> dict[str, dict[str, np.ndarray]]:
    """`{kind: {"target", "recorded", "clean"}}` patches of `clean` trials, each disturbed `copies` times per
    kind (draws keyed by `session`), at most `max_patches` per kind."""
    shape = PatchShape(config.patch_rows, config.patch_cols)
    fs_hz = clean[0].fs_hz
    seg = config.gan.segment_samples(fs_hz)
    hop = max(1, int(round(config.hop_ms * fs_hz / 1000.0)))
    out = {}
    for k, kind in enumerate(config.kinds):
        parts = [patch_sources(d, kind, shape=shape, segment_samples=seg, hop_samples=hop, clean=c)
                 for d, c in _disturbed(config, clean, session, k, kind)]  # fmt: skip
        patches = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        n = len(patches["target"])
        if n > config.max_patches:
            keep = np.sort(np.random.default_rng([session, k]).choice(n, config.max_patches, replace=False))
            patches = {name: x[keep] for name, x in patches.items()}
        out[kind] = patches
        logger.info("Session %s %s: %s patches", session, kind, len(patches["target"]))
    return out


def run_patch_study(
    out_dir: Path, config: PatchStudyConfig, *, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Train the patch GAN per seed, compare it per kind on the held-out patches, write `gan_patches.json`."""
    import torch

    started = time.perf_counter()
    say = progress or (lambda _m: None)
    shape = PatchShape(config.patch_rows, config.patch_cols)
    train_sources, fs_hz = collect_patches(config, 1, config.train_trials)
    train = {kind: sources["target"] for kind, sources in train_sources.items()}
    held, _ = collect_patches(config, 2, config.val_trials)
    for kind in config.kinds:
        if len(train[kind]) < config.gan.batch_size or len(held[kind]["target"]) < 8:
            n_held = len(held[kind]["target"])
            raise ConfigError(f"Too few {kind!r} patches ({len(train[kind])} train, {n_held} held out); "
                              "raise severity or copies.")  # fmt: skip
    say(f"patches: { ({k: (len(train[k]), len(held[k]['target'])) for k in config.kinds}) }")
    per_seed: list[dict[str, Any]] = []
    train_s: list[float] = []
    threads = torch.get_num_threads()
    for seed in range(config.seeds):
        t0 = time.perf_counter()
        gan = train_patch_gan(train, fs_hz=fs_hz, config=config.gan, shape=shape, seed=seed, num_threads=threads)
        train_s.append(time.perf_counter() - t0)
        untrained = train_patch_gan(train, fs_hz=fs_hz, config=replace(config.gan, steps=0), shape=shape, seed=seed)
        say(f"seed {seed}: GAN trained in {train_s[-1]:.0f} s")
        per_seed.append(_score(gan, untrained, held, fs_hz=fs_hz, seed=seed))
    table = {kind: {metric: {name: _mean_std([s[kind][metric][name] for s in per_seed]) for name in REFERENCES}
                    for metric in METRICS} for kind in config.kinds}  # fmt: skip
    result = {
        "config": _config_dict(config),
        "patches": {k: {"train": int(len(train[k])), "held_out": int(len(held[k]["target"]))} for k in config.kinds},
        "per_seed": per_seed,
        "table": table,
        "train_s": train_s,
        "elapsed_s": time.perf_counter() - started,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gan_patches.json").write_text(json.dumps(result, indent=2))
    return result


def _score(gan: PatchGAN, untrained: PatchGAN, held: dict[str, dict[str, np.ndarray]], *, fs_hz: float, seed: int
           ) -> dict[str, Any]:  # fmt: skip
    """Every metric per kind against held-out recorded patches; generated patches spliced as `splice` would.

    An additive kind's candidates are the clean EMG under the held-out patches plus generated patches; a
    replacing kind's are the generated patches alone.
    """
    scores = {}
    for k, kind in enumerate(sorted(held)):
        rng = np.random.default_rng([seed, 77, k])
        clean = held[kind]["clean"]

        def make(model: PatchGAN, kind: str = kind, clean: np.ndarray = clean
                 ) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:  # fmt: skip
            if kind in REPLACING_KINDS:
                return lambda index, r: model.sample(kind, len(index), r)
            return lambda index, r: clean[index] + model.sample(kind, len(index), r)

        def under(index: np.ndarray, _rng: np.random.Generator, clean: np.ndarray = clean) -> np.ndarray:
            return clean[index]

        candidates = {"gan": make(gan), "untrained": make(untrained), "clean": under}
        scores[kind] = compare_to_real(held[kind]["recorded"], candidates, fs_hz=fs_hz, rng=rng)
    return scores


def _mean_std(values: list[float]) -> list[float]:
    return [float(np.mean(values)), float(np.std(values))]


def _config_dict(config: PatchStudyConfig) -> dict[str, Any]:
    data = asdict(config)
    data["gan"] = config.gan.to_dict()
    return data


def beats(metric: str, row: dict[str, list[float]], a: str, b: str) -> bool:
    """Whether candidate `a` is better than `b` on `metric` (lower, or closer to real where `METRICS` says so)."""
    if METRICS[metric][1] == "closer to real":
        real = row["real"][0]
        return abs(row[a][0] - real) < abs(row[b][0] - real)
    return row[a][0] < row[b][0]


def format_report(result: dict[str, Any]) -> str:
    """The markdown report: protocol, one table per kind, the win count against the naive generator."""
    cfg = result["config"]
    gan = cfg["gan"]
    lines = [
        "# Patch GAN quality per disturbance kind",
        "",
        f"Written by `rohde study gan-patches --seeds {cfg['seeds']} --steps {gan['steps']}"
        + (f" --kinds {','.join(cfg['kinds'])}" if tuple(cfg["kinds"]) != PATCH_KINDS else "")
        + f"` (`run_patch_study`, `format_report`) in {result['elapsed_s']:.0f} s "
        f"({len(result['per_seed'])} seeds; GAN training {np.mean(result['train_s']):.0f} s per seed). **Reduced "
        f"protocol** (2 CPU cores): one simulated subject (3 x 8 x 8, 2048 Hz); training patches from "
        f"{cfg['train_trials']} session-1 trials, held-out patches from {cfg['val_trials']} session-2 trial(s), "
        f'each disturbed {cfg["copies"]} times per kind at random positions (`Placement("patch", '
        f"{tuple(cfg['severity'])})`); patches of {cfg['patch_rows']} x {cfg['patch_cols']} sites over "
        f"{gan['segment_ms']} ms, cut where the ground-truth mask is set (at most {cfg['max_patches']} per kind). "
        f"GAN: {gan['steps']} generator steps, batch {gan['batch_size']}, lr {gan['lr']}, widths "
        f"{gan['g_width']}/{gan['c_width']}. Additive kinds are learned as the disturbance alone (disturbed "
        "minus clean) and added when spliced; LC and saturation as the recorded signal, which replaces the "
        "clean one (`rohde/training/gan_patches.py`).",
        "",
        "Every figure compares a candidate with half A of the held-out **recorded** disturbed patches (mean ± "
        "standard deviation over seeds); the candidates stand for half B: `gan` the trained patch GAN, spliced as "
        "`PatchGAN.splice` does (an additive kind's patches added to the clean EMG under half B's patches, a "
        "replacing kind's alone), `untrained` the same generator before training, spliced alike, `clean` the "
        "clean EMG under half B with no disturbance (what the GAN adds to it, for additive kinds), `naive` "
        "Gaussian noise with the spectrum of half B (spectrum and RMS taken from held-out data: on the spectral "
        "metrics it starts near the real-vs-real floor), `real` half B itself. `dtw_per_sample_uv` and "
        "`max_xcorr` are better closer to `real`, every other metric lower. **bold**: the GAN beats naive.",
        "",
        "| kind | patches (train / held out) | GAN beats naive | GAN beats untrained |",
        "| --- | ---: | ---: | ---: |",
    ]
    n_metrics = len(METRICS)
    for kind, rows in result["table"].items():
        p = result["patches"][kind]
        wins_naive = sum(beats(m, rows[m], "gan", "naive") for m in METRICS)
        wins_untrained = sum(beats(m, rows[m], "gan", "untrained") for m in METRICS)
        lines.append(f"| {kind} | {p['train']} / {p['held_out']} | {wins_naive} of {n_metrics} | "
                     f"{wins_untrained} of {n_metrics} |")  # fmt: skip
    for kind, rows in result["table"].items():
        lines += [
            "",
            f"### {kind}",
            "",
            "| metric | gan | untrained | clean | naive | real |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for metric in METRICS:
            row = rows[metric]
            cells = [f"{row[n][0]:.3g} ± {row[n][1]:.2g}" for n in REFERENCES]
            if beats(metric, row, "gan", "naive"):
                cells[0] = f"**{cells[0]}**"
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    losses = {
        kind: [m for m in METRICS if not beats(m, rows[m], "gan", "naive")] for kind, rows in result["table"].items()
    }
    lines += ["", "## Where the GAN does not beat the naive generator", ""]
    lines += [
        f"- {kind}: " + (", ".join(f"`{m}`" for m in lost) if lost else "nowhere") for kind, lost in losses.items()
    ]
    lines += ["", "Metrics: " + "; ".join(f"`{m}` {d}" for m, (d, _) in METRICS.items()) + "."]
    return "\n".join(lines) + "\n"


WHY_HEADING = "## Why"  # a hand-written section of the docs copy from this heading on is kept by write_report


def write_report(result: dict[str, Any], out_dir: Path, *, docs: Path | None = None) -> Path:
    """`out_dir/gan_patches.md`, and the same at `docs`, where a section from `WHY_HEADING` on (the reasons,
    written by hand after reading the figures) is carried over from the file already there."""
    text = format_report(result)
    path = out_dir / "gan_patches.md"
    path.write_text(text)
    if docs is not None:
        kept = ""
        if docs.is_file():
            old = docs.read_text()
            at = old.find("\n" + WHY_HEADING)
            kept = old[at:] if at >= 0 else ""
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(text + kept)
    return path
