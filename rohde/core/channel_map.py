"""Which channels of an amplifier's stream feed a model, in which order, and how their values become uV.

Pure (no LSL): the server (`rohde.server.lsl_inlet`) and the XDF loader (`rohde.core.datasets`) describe
a stream's channels as `ChannelInfo`s (label, type, unit from `<desc><channels><channel>`) and call
`map_channels`, which returns a `ChannelMapping` or raises `StreamMismatchError` with the reason.

Amplifier apps publish more than EMG: the Quattrocento app appends counter and trigger channels, TMSi
SAGA a STATUS and a COUNTER (and bipolar and AUX inputs), others sawtooth, battery or accelerometer
channels. The rules, in order:

1. **Which channels.** An explicit selection (`parse_selection`: 0-based indices, inclusive index
   ranges `0-63`, labels, label ranges `EMG1..EMG64`, `type:UNI`) is taken as given, in its order.
   Otherwise auxiliary channels are dropped (a type or a label such as counter, trigger, status, saw,
   aux, marker, digital, battery, accelerometer); when more channels than the model's remain, the one
   channel type with exactly the model's count is taken; anything else is refused with the channels
   found and how to select them.
2. **Which order.** Labels naming the model's electrodes (`G1R1C1`, from the model's layout; a RoHDE
   layout in the stream's desc gives every channel such a label) map channel to electrode, reordering
   the stream when needed; such labels that name electrodes the model lacks, or miss some of its own,
   contradict the model and refuse the stream. Numbered labels with one prefix (`EMG1`..`EMG64`,
   `UNI 1`.., `CH0`..) whose numbers are consecutive map by number. A stream without labels, or with
   labels of another vocabulary (10-20 names), is taken in stream order, and the mapping says so.
3. **Units.** Each channel's unit (V, mV, uV, nV with their spellings: `microvolts`, `µV`, `uVolt`, an
   optional factor such as `0.5 uV` for an integer LSB) scales it to uV; a missing or unknown unit is
   taken as uV, and the mapping says so.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from rohde.core.errors import ConfigError, StreamMismatchError
from rohde.core.layouts import NO_ELECTRODE, ElectrodeGrid, ElectrodeLayout

# Stream types amplifier apps use for EMG, in order of preference: RoHDE and most EMG apps `EMG`, the
# Quattrocento app `ExG`, Brain Products, ANT and TMSi SAGA apps `EEG`. Compared without regard to case.
EMG_STREAM_TYPES = ("EMG", "ExG", "EEG")


@dataclass(frozen=True)
class ChannelInfo:
    """One channel as a stream's desc describes it ("" where it says nothing)."""

    label: str = ""
    type: str = ""
    unit: str = ""


# Channel types and label stems of what amplifier apps append to the EMG: never electrode signals.
AUX_TYPES = frozenset({
    "aux", "auxiliary", "counter", "count", "trigger", "trig", "triggers", "stim", "stimulus", "status", "marker",
    "markers", "misc", "digital", "dig", "digi", "digstat", "saw", "sawtooth", "ramp", "buffer", "sync", "event",
    "events", "accel", "acc", "accelerometer", "gyro", "gyroscope", "battery", "bat", "timestamp", "time",
    "sequence", "seq", "temperature", "temp", "impedance", "quality", "button", "light", "sound",
})
_AUX_LABEL = re.compile(
    r"^(counter|count|cnt|trigger|trig|triggers|status|stat|saw|sawtooth|ramp|buffer|sync|marker|markers|stim|"
    r"aux|auxiliary|digi|dig|digital|battery|bat|timestamp|seq|sequence|accel|acc|gyro|event|button)"
    r"[\s_\-]*[a-z]?\d*([\s_\-]+\d+)?$",
    re.IGNORECASE,
)
_POSITION_LABEL = re.compile(r"^G\d+R\d+C\d+$", re.IGNORECASE)  # a RoHDE electrode name (grid, row, column)
_NUMBERED_LABEL = re.compile(r"^(?P<prefix>.*?)(?P<number>\d+)$")

# Unit spellings -> uV per unit. Keys are lower case with spaces removed and µ/μ written as u.
_UV_PER_UNIT = {
    **dict.fromkeys(("v", "volt", "volts"), 1e6),
    **dict.fromkeys(("mv", "millivolt", "millivolts", "mvolt", "mvolts"), 1e3),
    **dict.fromkeys(("uv", "microvolt", "microvolts", "uvolt", "uvolts", "microv"), 1.0),
    **dict.fromkeys(("nv", "nanovolt", "nanovolts", "nvolt", "nvolts"), 1e-3),
}
_UNIT_WITH_FACTOR = re.compile(r"^(?P<factor>[0-9]*\.?[0-9]+(e[+-]?\d+)?)?\*?(?P<unit>.*)$")


def normalise_label(label: str) -> str:
    """Labels compare without case and whitespace: `uni 1` is `UNI1`."""
    return re.sub(r"\s+", "", label).upper()


def uv_per_unit(unit: str) -> float | None:
    """How many uV one unit of `unit` is (`mV` -> 1000, `0.5 uV` -> 0.5); None when no voltage unit is named."""
    text = unit.strip().lower().replace("µ", "u").replace("μ", "u").replace(" ", "")
    match = _UNIT_WITH_FACTOR.match(text)
    if not text or match is None:
        return None
    scale = _UV_PER_UNIT.get(match["unit"])
    if scale is None:
        return None
    factor = float(match["factor"]) if match["factor"] else 1.0
    return factor * scale if factor > 0 else None


def is_auxiliary(channel: ChannelInfo) -> bool:
    """A counter, trigger, status... channel by its type or label (an EMG electrode it is not)."""
    kind = channel.type.strip().lower()
    return kind in AUX_TYPES or bool(_AUX_LABEL.match(channel.label.strip()))


# ------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class _Item:
    kind: str  # index, index_range, label, label_range, type
    first: str
    last: str = ""


def parse_selection(spec: str) -> tuple[_Item, ...]:
    """Parse a channel selection: comma-separated 0-based indices (`5`), inclusive index ranges (`0-63`),
    labels (`EMG1`), inclusive label ranges in stream order (`EMG1..EMG64`) and types (`type:UNI`)."""
    items = []
    for raw in spec.split(","):
        text = raw.strip()
        if not text:
            continue
        if text.lower().startswith("type:"):
            kind = text[5:].strip()
            if not kind:
                raise ConfigError(f"Channel selection item {text!r} names no type; write e.g. 'type:EMG'.")
            items.append(_Item("type", kind))
        elif re.fullmatch(r"\d+", text):
            items.append(_Item("index", text))
        elif (match := re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)) is not None:
            if int(match[1]) > int(match[2]):
                raise ConfigError(f"Channel range {text!r} runs backwards; write it low-high, e.g. '0-63'.")
            items.append(_Item("index_range", match[1], match[2]))
        elif ".." in text:
            first, _, last = text.partition("..")
            if not first.strip() or not last.strip():
                raise ConfigError(f"Channel label range {text!r} needs a label on both sides of '..'.")
            items.append(_Item("label_range", first.strip(), last.strip()))
        else:
            items.append(_Item("label", text))
    if not items:
        raise ConfigError(f"Channel selection {spec!r} selects nothing; give indices, ranges or labels, e.g. '0-63'.")
    return tuple(items)


def _label_index(labels: Sequence[str], label: str, spec: str) -> int:
    wanted = normalise_label(label)
    hits = [j for j, own in enumerate(labels) if normalise_label(own) == wanted]
    if len(hits) != 1:
        known = ", ".join(repr(lab) for lab in labels[:8]) + (" ..." if len(labels) > 8 else "")
        reason = "no channel" if not hits else f"{len(hits)} channels"
        raise StreamMismatchError(f"channel selection {spec!r}: {reason} labelled {label!r} (its labels: {known})")
    return hits[0]


def resolve_selection(spec: str, channels: Sequence[ChannelInfo]) -> list[int]:
    """Stream indices a selection names, in its order; refuses unknown labels, bad indices and repeats."""
    n = len(channels)
    labels = [c.label for c in channels]
    picked: list[int] = []
    for item in parse_selection(spec):
        if item.kind == "index":
            found = [int(item.first)]
        elif item.kind == "index_range":
            found = list(range(int(item.first), int(item.last) + 1))
        elif item.kind == "label":
            found = [_label_index(labels, item.first, spec)]
        elif item.kind == "label_range":
            start, stop = _label_index(labels, item.first, spec), _label_index(labels, item.last, spec)
            if start > stop:
                raise StreamMismatchError(f"channel selection {spec!r}: {item.first!r} comes after {item.last!r} "
                                          "in the stream; write the range in stream order")
            found = list(range(start, stop + 1))
        else:
            wanted = item.first.strip().lower()
            found = [j for j, c in enumerate(channels) if c.type.strip().lower() == wanted]
            if not found:
                kinds = sorted({c.type for c in channels if c.type})
                raise StreamMismatchError(f"channel selection {spec!r}: no channel of type {item.first!r} "
                                          f"(its types: {kinds or 'none described'})")
        bad = [j for j in found if not 0 <= j < n]
        if bad:
            raise StreamMismatchError(f"channel selection {spec!r}: index {bad[0]} is outside 0..{n - 1} "
                                      "(indices are 0-based)")
        picked.extend(found)
    repeated = sorted(j for j, count in Counter(picked).items() if count > 1)
    if repeated:
        raise StreamMismatchError(f"channel selection {spec!r} names channel {repeated[0]} more than once")
    return picked


def _short(values: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _describe(j: int, channel: ChannelInfo) -> str:
    return f"{j}:{channel.label}" if channel.label else str(j)


def select_channels(channels: Sequence[ChannelInfo], *, n_wanted: int | None, target_labels: Sequence[str] = (),
                    selection: str | None = None) -> tuple[list[int], list[int]]:
    """(picked stream indices, dropped auxiliary indices). `n_wanted` None: keep every non-auxiliary channel."""
    if selection:
        return resolve_selection(selection, channels), []
    targets = {normalise_label(label) for label in target_labels}
    dropped = [j for j, c in enumerate(channels) if is_auxiliary(c) and normalise_label(c.label) not in targets]
    kept = [j for j in range(len(channels)) if j not in set(dropped)]
    if n_wanted is None or len(kept) == n_wanted:
        return kept, dropped
    if len(kept) > n_wanted:
        # One channel type of exactly the model's count (TMSi: 64 UNI beside 4 BIP). Electrode names alone never
        # pick a subset: G1R1C1..G1R4C4 of a 4 x 16 grid are not the electrodes of a model's 4 x 4 grid.
        by_type: dict[str, list[int]] = {}
        for j in kept:
            by_type.setdefault(channels[j].type.strip().lower(), []).append(j)
        fitting = [group for group in by_type.values() if len(group) == n_wanted]
        if len(fitting) == 1:
            return fitting[0], [j for j in range(len(channels)) if j not in set(fitting[0])]
    aux = _short([_describe(j, channels[j]) for j in dropped])
    besides = f" besides {len(dropped)} auxiliary ({aux})" if dropped else ""
    if len(kept) < n_wanted:
        raise StreamMismatchError(f"it has {len(kept)} channels{besides}, the model needs {n_wanted}")
    kinds = Counter(channels[j].type or "untyped" for j in kept)
    found = ", ".join(f"{kind}: {count}" for kind, count in kinds.items())
    raise StreamMismatchError(
        f"it has {len(kept)} channels{besides}, the model needs {n_wanted}, and their types ({found}) do not say "
        f"which: select them with --channels / ROHDE_STREAM_CHANNELS (0-based indices, ranges such as "
        f"0-{n_wanted - 1}, labels or type:NAME)")


# ---------------------------------------------------------------------------------------------- order


def _numbered_order(labels: Sequence[str]) -> list[int] | None:
    """Positions sorted by number when every label is one prefix plus consecutive distinct numbers."""
    matches = [_NUMBERED_LABEL.match(normalise_label(label)) for label in labels]
    if not labels or any(m is None for m in matches):
        return None
    prefixes = {m["prefix"].rstrip("_-.:") for m in matches if m is not None}
    numbers = [int(m["number"]) for m in matches if m is not None]
    if len(prefixes) != 1 or sorted(numbers) != list(range(min(numbers), min(numbers) + len(numbers))):
        return None
    return sorted(range(len(labels)), key=lambda k: numbers[k])


@dataclass(frozen=True)
class ChannelMapping:
    """Model channel k reads stream channel `stream_indices[k]` times `scale_to_uv[k]`."""

    stream_indices: tuple[int, ...]
    scale_to_uv: tuple[float, ...]
    n_stream_channels: int
    method: str  # labels, numbered_labels, stream_order or selection
    reordered: bool  # the model's order differs from the stream's
    dropped: tuple[str, ...] = ()  # stream channels left out ("index:label")
    units: dict[str, int] = field(default_factory=dict)  # unit text as given -> channel count
    notes: tuple[str, ...] = ()  # assumptions the mapping made

    @property
    def n_channels(self) -> int:
        return len(self.stream_indices)

    @cached_property
    def is_identity(self) -> bool:
        """Every stream channel, in stream order, already in uV: samples pass unchanged."""
        return (self.stream_indices == tuple(range(self.n_stream_channels))
                and all(s == 1.0 for s in self.scale_to_uv))

    @cached_property
    def _index(self) -> np.ndarray:
        return np.asarray(self.stream_indices, dtype=np.intp)

    @cached_property
    def _scale(self) -> np.ndarray | None:
        """Per-channel factors, or None when every channel is in uV already."""
        return None if all(s == 1.0 for s in self.scale_to_uv) else np.asarray(self.scale_to_uv, dtype=np.float32)

    def apply(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """`raw` `(n, n_stream_channels)` of any numeric dtype -> `(n, n_channels)` float32 uV, into `out`
        (at least n rows) when given. An identity mapping of float32 input returns `raw` itself."""
        if raw.ndim != 2 or raw.shape[1] != self.n_stream_channels:
            raise ValueError(f"Expected samples of shape (n, {self.n_stream_channels}), got {raw.shape}.")
        if self.is_identity and raw.dtype == np.float32:
            return raw
        n = raw.shape[0]
        target = np.empty((n, self.n_channels), np.float32) if out is None else out[:n]
        if raw.dtype == np.float32:
            np.take(raw, self._index, axis=1, out=target)
        else:  # double, int16, int32...: converted while gathered (int32 nV and double V fit float32 uV)
            np.copyto(target, raw[:, self._index], casting="unsafe")
        if self._scale is not None:
            target *= self._scale
        return target

    def describe(self) -> str:
        how = {"labels": "by the model's electrode labels", "numbered_labels": "by channel number",
               "stream_order": "in stream order", "selection": "as selected"}[self.method]
        parts = [f"{self.n_channels} of {self.n_stream_channels} channels {how}"
                 + (", reordered" if self.reordered else "")]
        if self.dropped:
            parts.append(f"dropped {_short(list(self.dropped))}")
        return "; ".join([*parts, *self.notes])

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "reordered": self.reordered, "stream_channels": list(self.stream_indices),
                "dropped": list(self.dropped), "units": dict(self.units), "notes": list(self.notes),
                "summary": self.describe()}


def _order(picked: list[int], labels: list[str], target_labels: Sequence[str], *,
           selected: bool) -> tuple[list[int], str, list[str]]:
    """(stream indices in model order, method, notes) for the picked channels' labels."""
    target_index = {normalise_label(label): k for k, label in enumerate(target_labels)}
    names = [normalise_label(label) for label in labels]
    if all(name in target_index for name in names) and len(set(names)) == len(names) == len(target_labels):
        order = [0] * len(picked)
        for j, name in zip(picked, names, strict=True):
            order[target_index[name]] = j
        return order, "labels", []
    if any(_POSITION_LABEL.match(name) for name in names):
        unknown = [label for label, name in zip(labels, names, strict=True) if name not in target_index]
        repeated = [label for label, count in Counter(names).items() if count > 1]
        missing = [label for label in target_labels if normalise_label(label) not in set(names)]
        problems = []
        if unknown:
            problems.append(f"{_short([lab or '(no label)' for lab in unknown])} "
                            f"{'is' if len(unknown) == 1 else 'are'} no electrode of the model")
        if repeated:
            problems.append(f"{_short(repeated)} appear{'s' if len(repeated) == 1 else ''} more than once")
        if missing:
            problems.append(f"the model's {_short(missing)} {'is' if len(missing) == 1 else 'are'} missing")
        raise StreamMismatchError(
            "its channel labels contradict the model's electrode layout: " + "; ".join(problems))
    if all(not label.strip() for label in labels):
        return picked, "selection" if selected else "stream_order", \
            ([] if selected else ["the stream names no channel labels: channels taken in stream order"])
    if selected:
        return picked, "selection", []
    numbered = _numbered_order(labels)
    if numbered is not None:
        return [picked[k] for k in numbered], "numbered_labels", []
    shown = _short([label for label in labels if label], 3)
    return picked, "stream_order", [f"labels ({shown}) are not the model's electrode names "
                                    f"({_short(list(target_labels), 2)}): channels taken in stream order"]


def _units(channels: Sequence[ChannelInfo], order: list[int]) -> tuple[list[float], dict[str, int], list[str]]:
    scales, units, unknown, missing = [], Counter[str](), Counter[str](), 0
    for j in order:
        unit = channels[j].unit.strip()
        units[unit or "(none)"] += 1
        scale = uv_per_unit(unit)
        if scale is None:
            if unit:
                unknown[unit] += 1
            else:
                missing += 1
            scale = 1.0
        scales.append(scale)
    notes = [f"unit {unit!r} of {count} channel{'s' if count > 1 else ''} is no voltage unit: assumed uV"
             for unit, count in unknown.items()]
    if missing:
        notes.append(f"no unit given for {missing} channel{'s' if missing > 1 else ''}: assumed uV")
    return scales, dict(units), notes


def map_channels(channels: Sequence[ChannelInfo], target_labels: Sequence[str], *, selection: str | None = None,
                 positions: Sequence[str] | None = None) -> ChannelMapping:
    """Map a stream's `channels` onto the model channels named `target_labels` (in model order).

    `positions`: each stream channel's electrode name from a layout in the stream's desc (`G1R1C1`, or
    `AUXn` for channels on no grid); it names the channel when the channel's own label says nothing of
    position, and contradicts it (refused) when that label names another electrode.
    Raises StreamMismatchError with the reason (without the stream's name: the caller adds it).
    """
    channels = list(channels)
    if positions is not None:
        channels = _with_positions(channels, positions)
    picked, _ = select_channels(channels, n_wanted=len(target_labels), target_labels=target_labels,
                                      selection=selection)
    if len(picked) != len(target_labels):
        raise StreamMismatchError(f"channel selection {selection!r} names {len(picked)} channels, "
                                  f"the model needs {len(target_labels)}")
    order, method, notes = _order(picked, [channels[j].label for j in picked], target_labels,
                                  selected=bool(selection))
    scales, units, unit_notes = _units(channels, order)
    used = set(order)
    return ChannelMapping(
        stream_indices=tuple(order), scale_to_uv=tuple(scales), n_stream_channels=len(channels), method=method,
        reordered=order != sorted(order),
        dropped=tuple(_describe(j, channels[j]) for j in range(len(channels)) if j not in used),
        units=units, notes=tuple(notes + unit_notes))


def keep_channels(channels: Sequence[ChannelInfo], picked: Sequence[int], *, method: str) -> ChannelMapping:
    """A mapping that keeps `picked` stream channels in the given order (no model to order them by), scaled to uV."""
    order = list(picked)
    scales, units, notes = _units(channels, order)
    used = set(order)
    return ChannelMapping(
        stream_indices=tuple(order), scale_to_uv=tuple(scales), n_stream_channels=len(channels), method=method,
        reordered=order != sorted(order),
        dropped=tuple(_describe(j, channels[j]) for j in range(len(channels)) if j not in used),
        units=units, notes=tuple(notes))


def _with_positions(channels: list[ChannelInfo], positions: Sequence[str]) -> list[ChannelInfo]:
    if len(positions) != len(channels):
        raise StreamMismatchError(f"the layout in its desc covers {len(positions)} channels, "
                                  f"the stream has {len(channels)}")
    named = []
    for j, (channel, position) in enumerate(zip(channels, positions, strict=True)):
        own = channel.label.strip()
        if _POSITION_LABEL.match(position):
            if _POSITION_LABEL.match(own) and normalise_label(own) != normalise_label(position):
                raise StreamMismatchError(f"channel {j} is labelled {own!r} but the layout in its desc puts it "
                                          f"at {position}")
            named.append(ChannelInfo(position, channel.type, channel.unit))
        else:
            named.append(ChannelInfo(own or position, channel.type, channel.unit))
    return named


def sub_layout(layout: ElectrodeLayout, stream_indices: Sequence[int]) -> ElectrodeLayout:
    """`layout` (over a stream's channels) restricted to `stream_indices`, renumbered 0..n-1 in that order;
    electrodes of channels left out become NO_ELECTRODE."""
    new_index = {j: k for k, j in enumerate(stream_indices)}
    grids = tuple(ElectrodeGrid(name=g.name, ied_mm=g.ied_mm,
                                channels=tuple(tuple(new_index.get(c, NO_ELECTRODE) if c != NO_ELECTRODE
                                                     else NO_ELECTRODE for c in row) for row in g.channels))
                  for g in layout.grids)
    return ElectrodeLayout(name=layout.name, grids=grids, n_channels=len(stream_indices))
