"""Channel mapping of amplifier streams onto a model: selection, order, units, dtypes (pure, no LSL)."""

from __future__ import annotations

import numpy as np
import pytest

from rohde.core.channel_map import (
    ChannelInfo,
    is_auxiliary,
    map_channels,
    parse_selection,
    resolve_selection,
    sub_layout,
    uv_per_unit,
)
from rohde.core.errors import ConfigError, StreamMismatchError
from rohde.core.layouts import NO_ELECTRODE, default_layout, grid_layout

LAYOUT = grid_layout(1, 2, 4, name="1x2x4")  # 8 channels, labels G1R1C1, G1R2C1, G1R1C2, ...
MODEL = LAYOUT.channel_labels()


def emg(labels: list[str], unit: str = "uV", kind: str = "EMG") -> list[ChannelInfo]:
    return [ChannelInfo(label, kind, unit) for label in labels]


@pytest.mark.parametrize(("unit", "uv"), [
    ("V", 1e6), ("volts", 1e6), ("mV", 1e3), ("millivolts", 1e3), ("uV", 1.0), ("µV", 1.0), ("μV", 1.0),
    ("microvolts", 1.0), ("Microvolts", 1.0), ("uVolt", 1.0), ("µVolt", 1.0), ("nV", 1e-3), ("nanovolts", 1e-3),
    ("0.5 uV", 0.5), ("100nV", 0.1), ("1e-3 V", 1e3),
])
def test_voltage_units_scale_to_microvolts(unit: str, uv: float) -> None:
    assert uv_per_unit(unit) == pytest.approx(uv)


@pytest.mark.parametrize("unit", ["", "counts", "a.u.", "raw", "Bit", "-", "0 uV", "degrees"])
def test_no_voltage_unit_is_none(unit: str) -> None:
    assert uv_per_unit(unit) is None


@pytest.mark.parametrize(("channel", "aux"), [
    (ChannelInfo("Counter", "ExG"), True), (ChannelInfo("TRIGGER", ""), True), (ChannelInfo("STATUS", "EEG"), True),
    (ChannelInfo("SAW", ""), True), (ChannelInfo("AUX 1-1", "AUX"), True), (ChannelInfo("x", "trigger"), True),
    (ChannelInfo("Battery", ""), True), (ChannelInfo("UNI 1", "EEG"), False), (ChannelInfo("BIP 2", "BIP"), False),
    (ChannelInfo("EMG12", "EMG"), False), (ChannelInfo("G1R1C1", "EMG"), False), (ChannelInfo("Fp1", "EEG"), False),
])
def test_auxiliary_channels_by_type_or_label(channel: ChannelInfo, aux: bool) -> None:
    assert is_auxiliary(channel) is aux


def test_selection_syntax() -> None:
    items = parse_selection(" 0-3, 7 ,EMG1..EMG4, Ch 9, type:UNI ")
    assert [(i.kind, i.first, i.last) for i in items] == [
        ("index_range", "0", "3"), ("index", "7", ""), ("label_range", "EMG1", "EMG4"), ("label", "Ch 9", ""),
        ("type", "UNI", "")]
    for bad, match in [("", "selects nothing"), ("5-2", "backwards"), ("type:", "names no type"),
                       ("EMG1..", "both sides")]:
        with pytest.raises(ConfigError, match=match):
            parse_selection(bad)


def test_selection_resolves_against_the_stream() -> None:
    channels = [*emg([f"EMG{i}" for i in range(1, 5)]), ChannelInfo("Counter", "AUX"), *emg(["X", "Y"], kind="BIP")]
    assert resolve_selection("0-2,6", channels) == [0, 1, 2, 6]
    assert resolve_selection("emg2..EMG4, counter", channels) == [1, 2, 3, 4]
    assert resolve_selection("type:bip,0", channels) == [5, 6, 0]
    for spec, match in [("9", r"index 9 is outside 0\.\.6 \(indices are 0-based\)"), ("EMG9", "no channel labelled"),
                        ("0,0-1", "names channel 0 more than once"), ("EMG4..EMG1", "comes after"),
                        ("type:UNI", r"no channel of type 'UNI' \(its types: \['AUX', 'BIP', 'EMG'\]\)")]:
        with pytest.raises(StreamMismatchError, match=match):
            resolve_selection(spec, channels)


def test_model_labels_in_stream_order_map_unchanged() -> None:
    mapping = map_channels(emg(MODEL), MODEL)
    assert mapping.method == "labels" and not mapping.reordered and mapping.is_identity
    raw = np.arange(24, dtype=np.float32).reshape(3, 8)
    assert mapping.apply(raw) is raw  # the common case copies nothing


def test_shuffled_model_labels_are_reordered() -> None:
    perm = np.random.default_rng(3).permutation(8)
    mapping = map_channels(emg([MODEL[p] for p in perm]), MODEL)
    assert mapping.method == "labels" and mapping.reordered
    # Stream channel j carries the model's channel perm[j]: mapping undoes it.
    model_order = np.arange(40, dtype=np.float32).reshape(5, 8)
    stream = model_order[:, perm]
    np.testing.assert_array_equal(mapping.apply(stream), model_order)
    assert "reordered" in mapping.describe()


def test_quattrocento_style_extra_channels_are_dropped() -> None:
    channels = [*emg(MODEL, kind="ExG"), ChannelInfo("Counter", "ExG", ""), ChannelInfo("Trigger", "ExG", "")]
    mapping = map_channels(channels, MODEL)
    assert mapping.stream_indices == tuple(range(8)) and mapping.n_stream_channels == 10
    assert mapping.dropped == ("8:Counter", "9:Trigger") and not mapping.is_identity
    raw = np.arange(20, dtype=np.float32).reshape(2, 10)
    np.testing.assert_array_equal(mapping.apply(raw), raw[:, :8])


def test_tmsi_style_picks_the_one_type_of_the_model_s_count() -> None:
    channels = [*emg([f"UNI {i}" for i in range(1, 9)], "µVolt", "EEG"), *emg(["BIP 1", "BIP 2"], "µVolt", "BIP"),
                ChannelInfo("STATUS", "STATUS", "-"), ChannelInfo("COUNTER", "COUNTER", "-")]
    mapping = map_channels(channels, MODEL)
    assert mapping.stream_indices == tuple(range(8)) and mapping.method == "numbered_labels"
    assert set(mapping.dropped) == {"8:BIP 1", "9:BIP 2", "10:STATUS", "11:COUNTER"}
    assert mapping.units == {"µVolt": 8} and mapping.notes == ()


def test_numbered_labels_map_by_number() -> None:
    labels = ["CH3", "CH1", "CH2", "CH4", "CH8", "CH5", "CH6", "CH7"]
    mapping = map_channels(emg(labels), MODEL)
    assert mapping.method == "numbered_labels" and mapping.stream_indices == (1, 2, 0, 3, 5, 6, 7, 4)
    # Numbers that skip, or two prefixes, say nothing of order: stream order, said so.
    for other in (["EMG1", "EMG2", "EMG3", "EMG4", "EMG5", "EMG6", "EMG7", "EMG9"],
                  ["A1", "A2", "A3", "A4", "B1", "B2", "B3", "B4"], ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4"]):
        fallback = map_channels(emg(other), MODEL)
        assert fallback.method == "stream_order" and fallback.stream_indices == tuple(range(8))
        assert "not the model's electrode names" in fallback.notes[0]


def test_unlabelled_stream_of_the_right_count_is_taken_in_order() -> None:
    mapping = map_channels([ChannelInfo()] * 8, MODEL)
    assert mapping.method == "stream_order" and mapping.stream_indices == tuple(range(8))
    assert mapping.notes == ("the stream names no channel labels: channels taken in stream order",
                             "no unit given for 8 channels: assumed uV")
    with pytest.raises(StreamMismatchError,
                       match=r"it has 9 channels, the model needs 8, and their types \(untyped: 9\) do not say which"):
        map_channels([ChannelInfo()] * 9, MODEL)


def test_contradicting_labels_are_refused() -> None:
    other_grid = [label.replace("G1", "G2") for label in MODEL]
    with pytest.raises(StreamMismatchError, match="contradict the model's electrode layout: G2R1C1, .* are no "
                                                  "electrode of the model; the model's G1R1C1, .* are missing"):
        map_channels(emg(other_grid), MODEL)
    twice = [*MODEL[:7], MODEL[0]]
    with pytest.raises(StreamMismatchError, match="G1R1C1 appears more than once; the model's G1R2C4 is missing"):
        map_channels(emg(twice), MODEL)


def test_wider_stream_is_refused_with_what_it_holds() -> None:
    channels = [*emg([f"E{i}" for i in range(8)]), *emg(["X1", "X2"]), ChannelInfo("Trigger", "")]
    with pytest.raises(StreamMismatchError) as refused:
        map_channels(channels, MODEL)
    assert str(refused.value) == (
        "it has 10 channels besides 1 auxiliary (10:Trigger), the model needs 8, and their types (EMG: 10) do not "
        "say which: select them with --channels / ROHDE_STREAM_CHANNELS (0-based indices, ranges such as 0-7, "
        "labels or type:NAME)")
    with pytest.raises(StreamMismatchError, match=r"^it has 7 channels besides 1 auxiliary \(7:Trigger\), the model "
                                                  r"needs 8$"):
        map_channels([*channels[:7], channels[-1]], MODEL)
    picked = map_channels(channels, MODEL, selection="2-9")
    assert picked.method == "selection" and picked.stream_indices == tuple(range(2, 10))
    with pytest.raises(StreamMismatchError, match="names 3 channels, the model needs 8"):
        map_channels(channels, MODEL, selection="0-2")


def test_a_wider_grid_is_refused_unless_its_channels_are_selected() -> None:
    # The model's names within a larger grid are not the model's grid: refused, unless chosen explicitly.
    channels = [*emg(MODEL[4:]), *emg(["G1R1C5", "G1R2C5"]), *emg(MODEL[:4])]
    with pytest.raises(StreamMismatchError, match="it has 10 channels, the model needs 8, and their types"):
        map_channels(channels, MODEL)
    mapping = map_channels(channels, MODEL, selection="0-3,6-9")
    assert mapping.stream_indices == (6, 7, 8, 9, 0, 1, 2, 3) and mapping.reordered and mapping.method == "labels"


def test_units_scale_each_channel_and_dtypes_convert() -> None:
    channels = [*emg(MODEL[:4], "mV"), *emg(MODEL[4:6], "nV"), ChannelInfo(MODEL[6], "EMG", "counts"),
                ChannelInfo(MODEL[7], "EMG", "")]
    mapping = map_channels(channels, MODEL)
    assert mapping.scale_to_uv == (1e3,) * 4 + (1e-3,) * 2 + (1.0, 1.0)
    assert mapping.notes == ("unit 'counts' of 1 channel is no voltage unit: assumed uV",
                             "no unit given for 1 channel: assumed uV")
    for dtype in (np.float64, np.int16, np.int32):
        raw = np.full((3, 8), 7, dtype=dtype)
        out = mapping.apply(raw)
        assert out.dtype == np.float32 and out.shape == (3, 8)
        np.testing.assert_allclose(out[0], [7e3] * 4 + [7e-3] * 2 + [7, 7], rtol=1e-6)
    # int32 nV keeps its resolution over the whole EMG range; double V too.
    nv = map_channels(emg(MODEL, "nV"), MODEL)
    np.testing.assert_allclose(nv.apply(np.array([[123_456_789] * 8, [-1] * 8], np.int32))[:, 0], [123456.789, -1e-3],
                               rtol=1e-6)
    volts = map_channels(emg(MODEL, "V"), MODEL)
    np.testing.assert_allclose(volts.apply(np.array([[2.5e-5] * 8], np.float64))[0], 25.0, rtol=1e-6)
    buffer = np.zeros((10, 8), np.float32)
    assert np.shares_memory(nv.apply(np.ones((4, 8), np.int32), out=buffer), buffer)
    with pytest.raises(ValueError, match=r"shape \(n, 8\)"):
        nv.apply(np.ones((2, 9), np.int32))


def test_layout_positions_name_the_channels() -> None:
    perm = [7, 6, 5, 4, 3, 2, 1, 0]
    shuffled = grid_layout(1, 2, 4)
    positions = [MODEL[p] for p in perm] + ["AUX9"]  # what a permuted layout's channel_labels() gives
    mapping = map_channels([ChannelInfo()] * 8 + [ChannelInfo("Counter")], MODEL, positions=positions)
    assert mapping.method == "labels" and mapping.stream_indices == tuple(perm) and mapping.dropped == ("8:Counter",)
    with pytest.raises(StreamMismatchError, match="channel 0 is labelled 'G1R1C1' but the layout in its desc puts "
                                                  "it at G1R2C4"):
        map_channels(emg(MODEL), MODEL, positions=positions[:8])
    assert shuffled.n_channels == 8


def test_sub_layout_keeps_positions_of_the_picked_channels() -> None:
    layout = default_layout()
    picked = [5, 0, 64]
    sub = sub_layout(layout, picked)
    assert sub.n_channels == 3
    assert [sub.position(k) for k in range(3)] == [layout.position(j) for j in picked]
    assert int((sub.index_array() != NO_ELECTRODE).sum()) == 3
