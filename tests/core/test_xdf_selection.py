"""The XDF loader on recordings of other amplifiers: its own layout over a shuffled stream with extra
channels, integer units, explicit channels, and layouts the channels contradict (no LSL)."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from rohde.core.datasets import load_any
from rohde.core.errors import LayoutError
from rohde.core.layouts import ElectrodeGrid, ElectrodeLayout, grid_layout
from rohde.core.xdf import XdfStream, write_xdf

FS_HZ = 500.0
LAYOUT = grid_layout(2, 2, 4)  # 16 electrodes


def _stream_layout(order: np.ndarray, n_extra: int) -> ElectrodeLayout:
    """LAYOUT over a stream whose channel j carries LAYOUT's channel order[j], extra channels on no grid."""
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    grids = tuple(ElectrodeGrid(g.name, tuple(tuple(int(position[c]) for c in row) for row in g.channels), g.ied_mm)
                  for g in LAYOUT.grids)
    return ElectrodeLayout(LAYOUT.name, grids, LAYOUT.n_channels + n_extra)


def _desc(channels: list[tuple[str, str, str]], layout: ElectrodeLayout | None) -> ET.Element:
    desc = ET.Element("desc")
    node = ET.SubElement(desc, "channels")
    for label, kind, unit in channels:
        channel = ET.SubElement(node, "channel")
        ET.SubElement(channel, "label").text = label
        ET.SubElement(channel, "type").text = kind
        ET.SubElement(channel, "unit").text = unit
    if layout is not None:
        ET.SubElement(desc, "layout").text = layout.to_json()
    return desc


def _cues(stamps: np.ndarray) -> XdfStream:
    return XdfStream("cues", "Markers", 0.0, "string", stamps[:1], [["rest"]], "cues")


def test_a_shuffled_int16_stream_with_its_own_layout_keeps_every_electrode_in_place(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    uv = rng.normal(0, 50, (1000, 16)).astype(np.float32)
    order = rng.permutation(16)
    stream_layout = _stream_layout(order, 2)
    labels = stream_layout.channel_labels()
    values = np.concatenate([np.rint(uv[:, order] * 2), np.zeros((1000, 2))], axis=1).astype(np.int16)
    channels = [(labels[j], "EMG", "0.5 microvolts") for j in range(16)] + [("Counter", "Counter", "counts"),
                                                                              ("Trigger", "Trigger", "")]
    stamps = 10.0 + np.arange(1000) / FS_HZ
    path = write_xdf(tmp_path / "sim.xdf", [XdfStream("RoHDE-Sim", "ExG", FS_HZ, "int16", stamps, values, "s",
                                                      _desc(channels, stream_layout)), _cues(stamps)])
    rec = load_any(path)
    assert rec.n_channels == 16 and rec.layout.n_channels == 16
    # Stream order is kept, and the layout says where each channel sits: channel k is LAYOUT's order[k].
    np.testing.assert_allclose(rec.samples, uv[:, order], atol=0.25 + 1e-6)
    assert [rec.layout.position(k) for k in range(16)] == [LAYOUT.position(int(c)) for c in order]
    assert "dropped 16:Counter, 17:Trigger" in rec.provenance["channel_mapping"]
    # Given a layout, the channels are ordered onto it by their electrode names instead.
    onto = load_any(path, layout=LAYOUT.name)
    np.testing.assert_allclose(onto.samples, uv, atol=0.25 + 1e-6)
    assert "reordered" in onto.provenance["channel_mapping"]


def test_explicit_channels_and_contradicting_layouts(tmp_path: Path) -> None:
    stamps = 10.0 + np.arange(400) / FS_HZ
    values = np.arange(400 * 20, dtype=np.float64).reshape(400, 20) * 1e-6  # volts
    channels = [(f"E{k}", "EMG", "V") for k in range(20)]
    path = write_xdf(tmp_path / "wide.xdf", [XdfStream("amp", "EMG", FS_HZ, "double64", stamps, values, "w",
                                                       _desc(channels, None)), _cues(stamps)])
    with pytest.raises(LayoutError, match="20 channels and no layout"):
        load_any(path)
    rec = load_any(path, channels="E4..E19", layout="2x2x4")
    np.testing.assert_allclose(rec.samples, values[:, 4:] * 1e6, rtol=1e-6)
    with pytest.raises(LayoutError, match="does not fit layout '3x8x8': .*it has 20 channels"):
        load_any(path, layout="3x8x8")
    labelled = [(label, "EMG", "uV") for label in grid_layout(1, 4, 4).channel_labels()]
    other = write_xdf(tmp_path / "other.xdf", [XdfStream("amp", "EMG", FS_HZ, "float32", stamps,
                                                         np.zeros((400, 16), np.float32), "o", _desc(labelled, None)),
                                               _cues(stamps)])
    with pytest.raises(LayoutError, match="contradict the model's electrode layout: G1R3C1"):
        load_any(other, layout=LAYOUT.name)
