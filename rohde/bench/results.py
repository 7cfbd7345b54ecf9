"""results.json (strict JSON, one entry per run label) and the RESULTS.md generated from it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rohde.bench.markdown import render_markdown


def write_outputs(results: dict[str, Any], out_dir: Path, *, merge: bool = False) -> tuple[Path, Path]:
    """Merge `results` into out_dir/results.json (GPU figures beside the CPU ones) and regenerate RESULTS.md.

    With `merge`, only the sections measured now replace those of the stored run with the same label;
    its `meta.remeasured` lists each such partial run (date, command, sections)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    existing: dict[str, Any] = {}
    if json_path.exists():
        try:
            existing = json.loads(json_path.read_text())
        except json.JSONDecodeError:
            existing = {}
    key = results["meta"].get("label") or ("gpu" if results["meta"].get("gpu") else "cpu")
    stored = existing.get(key)
    if merge and isinstance(stored, dict):
        sections = [k for k in results if k != "meta"]
        stored["meta"].setdefault("remeasured", []).append(
            {"date_utc": results["meta"]["date_utc"], "command": results["meta"]["command"], "sections": sections})
        stored.update({k: results[k] for k in sections})
    else:
        existing[key] = results
    existing.setdefault("cpu", None)
    existing.setdefault("gpu", None)
    json_path.write_text(json.dumps(_finite(existing), indent=2, default=_json_default, allow_nan=False) + "\n")
    md_path = out_dir / "RESULTS.md"
    md_path.write_text(render_markdown(existing))
    return json_path, md_path


def _finite(value: Any) -> Any:
    """NaN and infinities as null, so results.json is strict JSON."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot serialise {type(value).__name__}.")
