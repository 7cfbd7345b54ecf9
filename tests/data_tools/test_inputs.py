"""Choosing representative recordings from file headers."""

from __future__ import annotations

from pathlib import Path

from rohde.data_tools.inputs import representative_recordings


def test_representatives_of_a_clean_only_folder(sim_dir: Path, tmp_path: Path) -> None:
    chosen = representative_recordings(
        [sim_dir / "s01_sess1_t02_clean.rohde.npz", sim_dir / "s01_sess1_t01_clean.rohde.npz"]
    )
    assert chosen == {"clean": sim_dir / "s01_sess1_t01_clean.rohde.npz"}
