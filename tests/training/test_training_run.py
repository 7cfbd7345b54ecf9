"""A whole training run with the tiny config on small simulated data, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rohde.cli import main
from rohde.core.alignment import AlignmentReference
from rohde.core.channel_repair import QUALITY_MASKING_KEY, ChannelRepair
from rohde.core.datasets import load_dataset
from rohde.core.model_package import load_model_package
from rohde.server.ingest_config import IngestConfig
from rohde.server.jobs import WindowJob
from rohde.server.metrics import ServerMetrics
from rohde.server.window_assembler import WindowAssembler
from rohde.training.split import recording_id

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.slow
def test_rohde_train_then_evaluate(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "tiny"
    code = main(["train", "--data", str(small_dataset), "--out", str(out), "--config", str(CONFIGS / "tiny.json"),
                 "--work-dir", str(tmp_path / "work"), "--no-progress"])  # fmt: skip
    assert code == 0
    package = load_model_package(out)
    assert set(package.metadata.metrics) == {"clean", "CA", "LC"}
    report = json.loads((out / "report" / "report.json").read_text())
    assert set(report["models"]) == {"clean", "seen_disturbed", "generic", "oracle", "rohde", "lda"}
    for per in report["models"].values():
        for m in per.values():
            assert 0.0 <= m["accuracy"] <= 1.0 and len(m["accuracy_vs_votes"]) == 3
    assert set(report["fraction_sweep"]) == {"0", "0.5", "1"}
    # The shipped RoHDE model is the sweep's best on validation among those that saw rebuilt channels (fraction
    # above 0, as quality masking needs), and its test figures are that model's.
    sweep = report["fraction_sweep"]
    (chosen,) = [f for f, per in sweep.items() if per["selected"]]
    assert sweep[chosen]["val_accuracy"] == max(per["val_accuracy"] for f, per in sweep.items() if float(f) > 0)
    assert float(chosen) == report["training"]["rohde"]["synthetic_fraction"] == report["data"]["synthetic_fraction"]
    assert sweep[chosen]["clean"]["accuracy"] == report["models"]["rohde"]["clean"]["accuracy"]
    assert report["export"]["parity_max_abs_diff"] <= 1e-4
    assert set(report["gan_quality"]["metrics"]) == {"CA", "LC"}
    for name in ("report.md", "accuracy_vs_votes.png", "accuracy_vs_generated_fraction.png", "confusion.png",
                 "gan_synthetic_vs_real.png"):  # fmt: skip
        assert (out / "report" / name).is_file()
    assert (tmp_path / "work" / "checkpoints" / "rohde_f0.5.pt").is_file()
    assert not any(p.suffix == ".pt" for p in out.rglob("*"))  # the package holds no pickles
    # Its alignment reference is the MAV map of the clean training trials, for label-free re-alignment.
    by_id = {recording_id(r): r for r in load_dataset(small_dataset)}
    train = [by_id[i] for i in report["data"]["split"]["train"]]
    assert package.metadata.alignment == AlignmentReference.from_recordings(train, package.preprocessing).to_dict()

    # Quality masking (on by default): the package asks the server to rebuild flagged channels, and the server's
    # window path does so for it, from the same neighbours as training (a dead electrode in a test recording).
    assert package.metadata.training_data[QUALITY_MASKING_KEY] is True and report["data"][QUALITY_MASKING_KEY] is True
    assert float(chosen) > 0 and "quality masking: on" in (out / "report" / "report.md").read_text()
    x = next(r for r in load_dataset(small_dataset) if r.session == "sess2").samples.copy()
    x[:, 5] = 0.0
    jobs: list[WindowJob] = []
    assembler = WindowAssembler("s", config=IngestConfig(), metrics=ServerMetrics(), emit=jobs.append)
    assembler.use_model(package, 1, max_chunk=4096)
    assembler.restart(1000.0)
    stamps = np.arange(len(x)) / 1000.0
    for start in range(0, len(x), 100):
        assembler.push(x[start : start + 100], stamps[start : start + 100], pulled_at=0.0, full=False)
    late = [j for j in jobs[-10:] if j.reject_reason is None and 5 in j.bad_channels]
    assert late, [j.bad_channels for j in jobs[-10:]]
    bad = np.zeros(package.metadata.n_channels, dtype=bool)
    bad[list(late[-1].bad_channels)] = True
    weights = ChannelRepair(package.layout).weights(bad)[np.flatnonzero(bad).tolist().index(5)]
    np.testing.assert_allclose(late[-1].window[5], weights @ late[-1].window, rtol=1e-4, atol=1e-5)
    assert np.abs(late[-1].window[5]).max() > 0  # rebuilt, not served flat

    test_only = tmp_path / "test_session"
    test_only.mkdir()
    for path in small_dataset.glob("*sess2*"):
        (test_only / path.name).write_bytes(path.read_bytes())
    evaluated = tmp_path / "eval"
    assert main(["evaluate", "--model", str(out), "--data", str(test_only), "--out", str(evaluated)]) == 0
    result = json.loads((evaluated / "report.json").read_text())["models"]["rohde-tiny"]
    # ONNX Runtime on the package scores the test session as the pipeline scored the PyTorch model.
    for condition in ("clean", "CA", "LC"):
        expected = report["models"]["rohde"][condition]
        assert result[condition]["n_windows"] == expected["n_windows"]
        assert abs(result[condition]["accuracy"] - expected["accuracy"]) <= 0.01
    assert (evaluated / "report.md").is_file() and (evaluated / "accuracy_vs_votes.png").is_file()

    # Re-running the same command from scratch reproduces every figure (seeded end to end on CPU).
    again = tmp_path / "models" / "tiny-again"
    assert main(["train", "--data", str(small_dataset), "--out", str(again), "--config", str(CONFIGS / "tiny.json"),
                 "--work-dir", str(tmp_path / "work-again"), "--no-progress"]) == 0  # fmt: skip
    rerun = json.loads((again / "report" / "report.json").read_text())
    assert rerun["models"] == report["models"] and rerun["fraction_sweep"] == report["fraction_sweep"]


def test_train_refuses_a_bad_config(small_dataset: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"augment": {"copies": 0}}))
    code = main(["train", "--data", str(small_dataset), "--out", str(tmp_path / "m"), "--config", str(bad)])
    assert code == 2
