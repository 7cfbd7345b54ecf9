"""`rohde data ...` end to end on small simulated recordings (and on flexemg for the baseline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rohde.cli import main
from rohde.core.datasets import load_any
from rohde.core.gestures import DEFAULT_GESTURES
from rohde.core.layouts import grid_layout
from rohde.core.xdf import XdfStream, write_xdf

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_info_text_and_json(sim_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "info", str(sim_dir / "s01_sess1_t04_CA.rohde.npz")]) == 0
    text = capsys.readouterr().out
    assert "192 channels at 1000 Hz, 5.6 s, layout 3x8x8" in text
    assert "condition CA" in text and "channels affected" in text and "RMS 20-450 Hz" in text

    assert main(["data", "info", str(sim_dir), "--json"]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert len(summaries) == 5
    ca = summaries[str(sim_dir / "s01_sess1_t04_CA.rohde.npz")]
    clean = summaries[str(sim_dir / "s01_sess1_t01_clean.rohde.npz")]
    assert ca["disturbance_fraction"] > 0 and clean["disturbance_fraction"] == 0
    assert set(ca["class_samples"]) == {*DEFAULT_GESTURES[:4], "unusable"}
    assert sum(ca["class_samples"].values()) == 5600
    assert 0 < ca["rms_uv"]["p10"] <= ca["rms_uv"]["median"] <= ca["rms_uv"]["p90"]


def test_plot_file_and_folder(sim_dir: Path, tmp_path: Path) -> None:
    assert main(["data", "plot", str(sim_dir / "s01_sess1_t04_CA.rohde.npz"), "--out", str(tmp_path / "one.png")]) == 0
    assert (tmp_path / "one.png").read_bytes().startswith(PNG_MAGIC)
    assert main(["data", "plot", str(sim_dir), "--out", str(tmp_path / "plots")]) == 0
    written = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert written == ["CA_s01_sess1_t04_CA.png", "LC_s01_sess1_t05_LC.png", "clean_s01_sess1_t01_clean.png"]
    assert all((tmp_path / "plots" / name).stat().st_size > 50_000 for name in written)


def test_baseline_on_simulated_conditions(sim_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "baseline.json"
    assert main(["data", "baseline", "--data", str(sim_dir), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "accuracy" in table and "CA" in table and "LC" in table
    rows = {r["condition"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"clean", "CA", "LC"}
    # Trials 1-2 train; held-out clean trial 3 and the CA/LC trials test.
    assert rows["clean"]["test_recordings"] == 1 and rows["CA"]["test_recordings"] == 1
    assert rows["clean"]["train_windows"] > 50
    assert rows["clean"]["accuracy"] > 0.8


def test_baseline_refuses_bad_arguments(sim_dir: Path) -> None:
    assert main(["data", "baseline"]) == 2
    assert main(["data", "baseline", "--data", str(sim_dir), "--train", str(sim_dir)]) == 2
    with pytest.raises(SystemExit):
        main(["data", "baseline", "--data", str(sim_dir), "--features", "wamp"])


def test_info_reads_xdf_with_a_layout_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stamps = 50.0 + np.arange(1000) / 1000.0
    samples = np.random.default_rng(0).normal(0, 10, (1000, 32)).astype(np.float32)
    cues = XdfStream("cues", "Markers", 0.0, "string", np.array([50.2]), [["hand_open"]])
    path = write_xdf(tmp_path / "rec.xdf", [XdfStream("amp", "EMG", 1000.0, "float32", stamps, samples), cues])
    assert main(["data", "info", str(path)]) == 2  # 32 channels and no layout in the desc
    capsys.readouterr()
    assert main(["data", "info", str(path), "--layout", "2x4x4"]) == 0
    text = capsys.readouterr().out
    assert "32 channels at 1000 Hz" in text and "hand_open 800" in text
    assert grid_layout(2, 4, 4).name in text


@pytest.mark.realdata
def test_baseline_on_flexemg_within_a_session(flexemg_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "flex.json"
    data = flexemg_dir / "data"
    args = ["data", "baseline", "--train", str(data / "001-Session1Train"), "--test", str(data / "001-Session1Test")]
    assert main([*args, "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["subject"] == "001" and row["condition"] == "clean"
    assert row["test_recordings"] == 10 and row["test_windows"] == 10 * 285
    assert row["accuracy"] > 0.9  # the paper reports 96.6 % within a session


@pytest.mark.slow
def test_simulate_quick_writes_a_dataset(tmp_path: Path) -> None:
    assert main(["data", "simulate", "--out", str(tmp_path), "--quick", "--seed", "1"]) == 0
    index = json.loads((tmp_path / "dataset.json").read_text())
    assert index["preset"] == "quick" and index["seed"] == 1
    files = sorted(p.name for p in tmp_path.glob("*.rohde.npz"))
    assert files == sorted(r["file"] for r in index["recordings"])
    assert {load_any(tmp_path / f).condition for f in files} >= {"clean", "CA", "LC"}


def test_spread_of_the_clean_trials(sim_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "spread", str(sim_dir), "--json"]) == 0
    spreads = json.loads(capsys.readouterr().out)
    (row,) = spreads.values()  # one subject and session; the CA and LC trials are left out
    assert list(spreads) == ["s01/sess1"]
    assert row["n_holds"] == 3 * 3 and row["n_gestures"] == 3
    assert main(["data", "spread", str(sim_dir)]) == 0
    assert "s01/sess1" in capsys.readouterr().out


@pytest.mark.realdata
def test_spread_of_real_holds(flexemg_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "spread", str(flexemg_dir / "data" / "001-Session1Train"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out).values()
    assert row["n_holds"] == 40 and row["n_gestures"] == 4  # ten trials of four gestures
    assert row["nearest_mean_accuracy"] == 1.0 and row["corr_to_mean"] > 0.95
