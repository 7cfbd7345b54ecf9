"""Loaders that turn every supported file into a `Recording`.

Supported inputs:
- `*.rohde.npz`: RoHDE's own format (`rohde.core.recording`).
- `*.mat`: one trial of the flexemg data set (64-electrode 16 x 4 forearm array, 1000 Hz), labelled
  with the data set's own timeline and margin rule (`flexemg_labels`).
- `*.xdf`: an LSL recording with an EMG stream and a marker stream of gesture cues; each EMG sample
  takes the latest cue at or before its LSL time stamp. The EMG stream is chosen by name, type or
  source_id, else it is the one numeric stream of type EMG, ExG or EEG (in that order of preference);
  its EMG channels are picked, ordered and scaled to uV as the server does (`rohde.core.channel_map`).
  The EMG stream's desc may carry the layout and gesture list (format in `rohde.core.xdf`).

`load_any` dispatches on the file name, `find_recordings` lists supported files under a folder and
`load_dataset` loads them all.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rohde.core.channel_map import (
    EMG_STREAM_TYPES,
    ChannelInfo,
    ChannelMapping,
    keep_channels,
    map_channels,
    select_channels,
    sub_layout,
)
from rohde.core.errors import LayoutError, RecordingFormatError, StreamMismatchError
from rohde.core.gestures import DEFAULT_GESTURES, UNUSABLE
from rohde.core.layouts import ElectrodeLayout, default_layout, flexemg_layout, layout_from_spec
from rohde.core.recording import SUFFIX, Recording, load_recording
from rohde.core.xdf import TAG_CLOCK_OFFSET, UNUSABLE_CUE, check_xdf

logger = logging.getLogger(__name__)

FLEXEMG_FS_HZ = 1000.0
FLEXEMG_N_ELECTRODES = 64
FLEXEMG_TWIDTH = 0.2  # margin around transitions as a fraction of timegest (the original analysis)
FLEXEMG_TAIL_UNUSABLE = 3000  # the README: the last 3000 samples of a trial are unusable
_FLEXEMG_FOLDER = re.compile(r"^(?P<subject>\d+)-(?P<session>.+)$")
_FLEXEMG_FILE = re.compile(r"^(?P<subject>\d+)-(?P<trial>\d+)$")

_BIDS_ENTITY = re.compile(r"(?:^|_)(?P<key>sub|ses|run)-(?P<value>[A-Za-z0-9]+)")

SUPPORTED_SUFFIXES = (SUFFIX, ".mat", ".xdf")


# --------------------------------------------------------------------------------------- flexemg


def flexemg_labels(
    n_samples: int,
    sequence: Sequence[int],
    *,
    timerest: int,
    timegest: int,
    twidth: float = FLEXEMG_TWIDTH,
    tail_unusable: int = FLEXEMG_TAIL_UNUSABLE,
) -> np.ndarray:
    """Per-sample labels `(n_samples,)` int16 of one flexemg trial, per the data set's README.

    Timeline: `timerest` samples of rest (label 0), then gesture `sequence[i]` (1-based label) for
    `timegest` samples each, then rest. Unusable (-1): `twidth * timegest` samples on each side of
    every transition, the first `twidth * timegest` samples and the last `tail_unusable` samples.
    """
    if timerest < 0 or timegest <= 0:
        raise RecordingFormatError(f"flexemg timing must be positive, got timerest={timerest}, timegest={timegest}.")
    if not 0 <= twidth < 0.5:
        raise RecordingFormatError(f"twidth must be in [0, 0.5), got {twidth}.")
    labels = np.zeros(n_samples, dtype=np.int16)
    transitions = []
    for i, gesture in enumerate(sequence):
        start = timerest + i * timegest
        labels[start : start + timegest] = int(gesture)
        transitions.append(start)
    transitions.append(timerest + len(sequence) * timegest)
    margin = int(round(twidth * timegest))
    for t in transitions:
        labels[max(0, t - margin) : t + margin] = UNUSABLE
    labels[:margin] = UNUSABLE
    if tail_unusable > 0:
        labels[max(0, n_samples - tail_unusable) :] = UNUSABLE
    return labels


def _flexemg_ids(path: Path) -> tuple[str, str, str]:
    """(subject, session, trial) from `.../001-Session1Train/001-003.mat` (or `.../001/Session1Train/`)."""
    file_match = _FLEXEMG_FILE.match(path.stem)
    folder_match = _FLEXEMG_FOLDER.match(path.parent.name)
    if folder_match:
        subject, session = folder_match["subject"], folder_match["session"]
    else:
        subject = file_match["subject"] if file_match else path.parent.parent.name
        session = path.parent.name
    trial = file_match["trial"] if file_match else path.stem
    return subject, session, trial


def _mat_field(struct: Any, name: str, path: Path) -> Any:
    try:
        return getattr(struct, name)
    except AttributeError as exc:
        raise RecordingFormatError(f"{str(path)!r} has no field p.{name}; it is not a flexemg trial.") from exc


def load_flexemg_trial(path: str | Path, *, twidth: float = FLEXEMG_TWIDTH) -> Recording:
    """One flexemg trial (`NNN-0TT.mat`) as a Recording in uV with README labels and the 16 x 4 map."""
    from scipy.io import loadmat  # scipy.io is slow to import and only needed here

    path = Path(path)
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, TypeError, NotImplementedError) as exc:
        raise RecordingFormatError(f"{str(path)!r} is not a readable MATLAB file ({exc}).") from exc
    if "raw" not in mat or "p" not in mat:
        raise RecordingFormatError(f"{str(path)!r} lacks the 'raw' and 'p' variables of a flexemg trial.")
    raw = np.asarray(mat["raw"])
    if raw.ndim != 2 or raw.shape[1] < FLEXEMG_N_ELECTRODES:
        raise RecordingFormatError(
            f"{str(path)!r}: 'raw' has shape {raw.shape}; a flexemg trial has at least {FLEXEMG_N_ELECTRODES} columns."
        )
    p = mat["p"]
    lsb_mv = float(_mat_field(p, "lsbmV", path))
    label_names = [str(n).lower() for n in np.atleast_1d(_mat_field(p, "labelnames", path))]
    sequence = [int(s) for s in np.atleast_1d(_mat_field(p, "sequence", path))]
    timegest = int(_mat_field(p, "timegest", path))
    timerest = int(_mat_field(p, "timerest", path))
    if any(not 1 <= s <= len(label_names) for s in sequence):
        raise RecordingFormatError(
            f"{str(path)!r}: p.sequence {sequence} names gestures outside 1..{len(label_names)}."
        )
    counts = raw[:, :FLEXEMG_N_ELECTRODES].astype(np.float64)
    # Counts -> uV: remove each channel's DC offset, then lsb in mV * 1000.
    samples_uv = (counts - counts.mean(axis=0)) * lsb_mv * 1000.0
    labels = flexemg_labels(raw.shape[0], sequence, timerest=timerest, timegest=timegest, twidth=twidth)
    subject, session, trial = _flexemg_ids(path)
    return Recording(
        samples=samples_uv.astype(np.float32),
        fs_hz=FLEXEMG_FS_HZ,
        layout=flexemg_layout(),
        labels=labels,
        gesture_names=("rest", *label_names),
        condition="clean",
        subject=subject,
        session=session,
        trial=trial,
        provenance={
            "source": "flexemg",
            "file": str(path),
            "powerline_hz": 60.0,  # recorded in the US: injected hum uses the local mains frequency
            "sequence": sequence,
            "timegest": timegest,
            "timerest": timerest,
            "twidth": twidth,
            "lsb_mv": lsb_mv,
        },
    )


# ------------------------------------------------------------------------------------------- XDF


def _first(info: dict[str, Any], key: str, default: Any = None) -> Any:
    value = info.get(key)
    if isinstance(value, list):
        return value[0] if value else default
    return default if value is None else value


def _desc_text(desc: Any, key: str) -> str | None:
    if not isinstance(desc, dict):
        return None
    value = _first(desc, key)
    return value if isinstance(value, str) and value.strip() else None


def _default_layout(n_channels: int) -> ElectrodeLayout:
    if n_channels == 192:
        return default_layout()
    if n_channels == 64:
        return flexemg_layout()
    raise LayoutError(
        f"The EMG stream has {n_channels} channels and no layout in its desc; pass layout "
        f"(a spec such as '2x8x8', or --layout on the command line)."
    )


def _xdf_channels(desc: Any, n_channels: int) -> list[ChannelInfo]:
    """`desc/channels/channel` (label, type, unit) as pyxdf nests them; plain channels when not all are described."""
    channels_node = desc.get("channels") if isinstance(desc, dict) else None
    node = channels_node[0] if isinstance(channels_node, list) and channels_node else None
    entries = node.get("channel") if isinstance(node, dict) else None
    if not isinstance(entries, list) or len(entries) != n_channels:
        return [ChannelInfo() for _ in range(n_channels)]
    return [ChannelInfo(*(str(_first(e, key, "") or "").strip() for key in ("label", "type", "unit")))
            if isinstance(e, dict) else ChannelInfo() for e in entries]


def _map_xdf_channels(
    desc: Any, n_channels: int, layout: ElectrodeLayout | str | None, channels: str | None
) -> tuple[ChannelMapping, ElectrodeLayout]:
    """Which channels of the stream are EMG, in which order and unit, and their layout.

    The layout is `layout` (the channels are then ordered onto it as the server orders them onto a model),
    else the desc's `layout` (over the whole stream or over its EMG channels), else one by channel count.
    """
    infos = _xdf_channels(desc, n_channels)
    text = _desc_text(desc, "layout")
    desc_layout = ElectrodeLayout.from_json(text) if text is not None else None
    positions = desc_layout.channel_labels() if desc_layout and desc_layout.n_channels == n_channels else None
    if isinstance(layout, str):
        layout = layout_from_spec(layout)
    if layout is None:
        picked, _ = select_channels(infos, n_wanted=None, selection=channels)
        if desc_layout is not None and desc_layout.n_channels in (n_channels, len(picked)):
            method = "selection" if channels else "stream_order"
            own = sub_layout(desc_layout, picked) if desc_layout.n_channels == n_channels else desc_layout
            return keep_channels(infos, picked, method=method), own  # the desc places every channel itself
        layout = _default_layout(len(picked))
    try:
        mapping = map_channels(infos, layout.channel_labels(), selection=channels, positions=positions)
    except StreamMismatchError as exc:
        raise LayoutError(f"The EMG stream does not fit layout {layout.name!r}: {exc}.") from exc
    return mapping, layout


def bids_entities(path: Path) -> dict[str, str]:
    """`sub`, `ses`, `run` from a BIDS-style name, as LabRecorder writes by default
    (`sub-P001/ses-S001/eeg/sub-P001_ses-S001_task-Default_run-001_eeg.xdf`)."""
    found: dict[str, str] = {}
    for part in [path.stem, *(p.name for p in path.parents)]:
        for match in _BIDS_ENTITY.finditer(part):
            found.setdefault(match["key"], match["value"])
    return found


def cue_labels(
    emg_stamps: np.ndarray,
    cue_stamps: np.ndarray,
    cues: Sequence[str],
    gesture_names: Sequence[str],
    *,
    tolerance_s: float = 0.0,
) -> np.ndarray:
    """Label of each EMG sample = the latest cue at or before its time stamp; -1 before any cue.

    A cue counts from `tolerance_s` before its stamp (the loader passes half a sample period, so a
    cue takes effect at the sample nearest to it whatever the rounding of the two clocks). Cues
    that name no gesture in `gesture_names` (e.g. 'pause', 'end') mark the following samples
    unusable until the next gesture cue.
    """
    index = {name: i for i, name in enumerate(gesture_names)}
    cue_codes = np.array([index.get(c, UNUSABLE) for c in cues], dtype=np.int16)
    order = np.argsort(cue_stamps, kind="stable")
    sorted_stamps = np.asarray(cue_stamps, dtype=np.float64)[order] - tolerance_s
    latest = np.searchsorted(sorted_stamps, emg_stamps, side="right") - 1
    labels = np.full(len(emg_stamps), UNUSABLE, dtype=np.int16)
    has_cue = latest >= 0
    labels[has_cue] = cue_codes[order][latest[has_cue]]
    return labels


def _cue_condition(conditions: list[str], path: Path) -> str:
    """The condition named by the cues' second channel: the one value, `mixed` if it changes."""
    unique = sorted(set(conditions))
    if not unique:
        return "clean"
    if len(unique) > 1:
        logger.warning("%s changes condition within the recording (%s); labelled 'mixed'.", path, unique)
        return "mixed"
    return unique[0]


def _stream_summary(stream: dict[str, Any]) -> str:
    info = stream["info"]
    return (f"{_first(info, 'name')!r} (type {_first(info, 'type')!r}, source_id {_first(info, 'source_id')!r}, "
            f"{_first(info, 'channel_count')} ch {_first(info, 'channel_format')} "
            f"at {_first(info, 'nominal_srate')} Hz)")


def pick_xdf_stream(streams: Sequence[dict[str, Any]], path: Path, *, name: str | None = None,
                    types: str | Sequence[str] | None = None, source_id: str | None = None) -> dict[str, Any]:
    """The EMG stream of a file's pyxdf streams (see `load_xdf_recording`); refuses none or several."""
    wanted = [types] if isinstance(types, str) else list(types or [])
    wanted = [t.strip().lower() for t in wanted if t.strip()]
    numeric = [s for s in streams if _first(s["info"], "channel_format") != "string"]

    def of_type(stream: dict[str, Any], kinds: Sequence[str]) -> bool:
        return str(_first(stream["info"], "type", "")).lower() in kinds

    if name or source_id or wanted:
        candidates = [s for s in numeric if (not name or _first(s["info"], "name") == name)
                      and (not source_id or _first(s["info"], "source_id") == source_id)
                      and (not wanted or of_type(s, wanted))]
        asked = "numeric, " + ", ".join(f"{key} {value!r}" for key, value in (
            ("name", name), ("type", "/".join(wanted)), ("source_id", source_id)) if value)
    else:
        candidates = []
        asked = f"numeric, of type {'/'.join(EMG_STREAM_TYPES)}, else of any type at a regular rate"
        for kind in EMG_STREAM_TYPES:
            candidates = [s for s in numeric if of_type(s, [kind.lower()])]
            if candidates:
                asked = f"numeric, of type {kind}"
                break
        if not candidates:
            candidates = [s for s in numeric if float(_first(s["info"], "nominal_srate", 0) or 0) > 0]
    if len(candidates) == 1:
        logger.info("%s: reading EMG stream %s.", path, _stream_summary(candidates[0]))
        return candidates[0]
    listed = "; ".join(_stream_summary(s) for s in streams) or "none"
    if not candidates:
        raise RecordingFormatError(f"{str(path)!r} holds no EMG stream ({asked}); its streams: {listed}.")
    raise RecordingFormatError(
        f"{str(path)!r} holds {len(candidates)} candidate EMG streams ({asked}): "
        f"{'; '.join(_stream_summary(s) for s in candidates)}; choose one by name, type or source_id "
        "(--stream-name, --stream-type, --stream-source-id).")


def load_xdf_recording(
    path: str | Path,
    *,
    layout: ElectrodeLayout | str | None = None,
    gesture_names: Sequence[str] | None = None,
    stream_name: str | None = None,
    stream_type: str | Sequence[str] | None = None,
    stream_source_id: str | None = None,
    channels: str | None = None,
    marker_type: str | None = None,
    subject: str | None = None,
    session: str | None = None,
    trial: str | None = None,
    dejitter: bool = True,
) -> Recording:
    """An XDF file's EMG stream labelled by its gesture cues.

    The EMG stream is the numeric stream with `stream_name`, of one of the types `stream_type` (one or a
    list, any case) and with `stream_source_id`, whichever are given; when none is, the one numeric
    stream of type EMG, else ExG, else EEG, else the one regular numeric stream of any type. Several that
    fit are refused with the candidates listed. `channels` selects its EMG channels as the server's
    `--channels` does (else auxiliary channels are dropped by their desc); values are scaled to uV
    from each channel's unit (none or unknown: uV).
    The marker stream is the first string stream (of type `marker_type` when given). The layout
    comes from `layout`, else the stream desc's `layout` JSON, else the channel count (192 ->
    3x8x8, 64 -> flexemg 16 x 4). Subject, session and trial default to the BIDS entities `sub`,
    `ses` and `run` of the path (LabRecorder's naming), else unknown / the file stem. Gesture
    names come from `gesture_names`, else the desc's `gestures`, else DEFAULT_GESTURES when a cue
    names one of them, else the cues in order of first appearance. The condition comes from the
    desc's `condition`, else from a second cue channel (RoHDE's amplifier sends `[gesture,
    condition]`), else `clean`. `dejitter` regularises the EMG
    time stamps (pyxdf's jitter removal), as chunked LSL pushes stamp many samples alike. A cue
    labels from the EMG sample nearest to it on.
    """
    import pyxdf  # reading XDF needs pyxdf only here

    path = Path(path)
    chunks = check_xdf(path)
    # Clock synchronisation needs ClockOffset chunks; without them pyxdf only warns about it.
    has_offsets = any(tag == TAG_CLOCK_OFFSET for tag, _ in chunks)
    try:
        streams, _ = pyxdf.load_xdf(
            str(path), synchronize_clocks=has_offsets, dejitter_timestamps=dejitter, verbose=False
        )
    except Exception as exc:  # pyxdf raises bare Exceptions of many kinds on malformed XML
        raise RecordingFormatError(f"pyxdf could not read {str(path)!r} ({exc}).") from exc
    stream = pick_xdf_stream(streams, path, name=stream_name, types=stream_type, source_id=stream_source_id)
    info = stream["info"]
    series = np.asarray(stream["time_series"])
    stamps = np.asarray(stream["time_stamps"], dtype=np.float64)
    if series.ndim != 2 or series.shape[0] == 0:
        raise RecordingFormatError(f"The EMG stream of {str(path)!r} holds no samples.")
    fs_hz = float(_first(info, "nominal_srate", 0.0))
    if fs_hz <= 0:
        fs_hz = float(info.get("effective_srate") or 0.0)
    if fs_hz <= 0:
        raise RecordingFormatError(f"The EMG stream of {str(path)!r} has no nominal or effective sampling rate.")
    desc = _first(info, "desc")
    mapping, resolved_layout = _map_xdf_channels(desc, series.shape[1], layout, channels)
    log = logger.warning if mapping.notes else logger.info
    log("%s: EMG stream %r (type %s): %s.", path, _first(info, "name"), _first(info, "type"), mapping.describe())

    markers = [
        s
        for s in streams
        if _first(s["info"], "channel_format") == "string"
        and (marker_type is None or str(_first(s["info"], "type", "")).lower() == marker_type.lower())
    ]
    cues: list[str] = []
    cue_conditions: list[str] = []
    cue_stamps = np.zeros(0)
    if markers:
        cues = [str(sample[0]) for sample in markers[0]["time_series"]]
        # RoHDE's amplifier sends [gesture, condition] per cue; plain cue streams have one channel.
        cue_conditions = [str(sample[1]) for sample in markers[0]["time_series"] if len(sample) > 1]
        cue_stamps = np.asarray(markers[0]["time_stamps"], dtype=np.float64)
    else:
        logger.warning("%s has no marker stream; every sample is labelled unusable.", path)
    if gesture_names is None:
        desc_gestures = _desc_text(desc, "gestures")
        if desc_gestures is not None:
            gesture_names = [str(g) for g in json.loads(desc_gestures)]
        elif set(cues) & set(DEFAULT_GESTURES):
            gesture_names = list(DEFAULT_GESTURES)
        else:
            # `unusable` marks stretches to leave out (RoHDE's cue streams and XDF writer): never a class.
            gesture_names = [c for c in dict.fromkeys(cues) if c != UNUSABLE_CUE]
    if not gesture_names:
        raise RecordingFormatError(f"{str(path)!r}: no gesture names in its desc or cues; pass gesture_names.")
    unnamed = sorted(set(cues) - set(gesture_names) - {UNUSABLE_CUE})
    if unnamed:
        logger.warning("%s: the cues %s name no gesture of %s; their samples are labelled unusable (pass "
                       "gesture_names, or rohde train --gestures, to count them).", path, unnamed, list(gesture_names))
    labels = cue_labels(stamps, cue_stamps, cues, gesture_names, tolerance_s=0.5 / fs_hz)
    bids = bids_entities(path)
    return Recording(
        samples=mapping.apply(series),
        fs_hz=fs_hz,
        layout=resolved_layout,
        labels=labels,
        gesture_names=tuple(gesture_names),
        condition=_desc_text(desc, "condition") or _cue_condition(cue_conditions, path),
        subject=subject or bids.get("sub", "unknown"),
        session=session or bids.get("ses", "unknown"),
        trial=trial or bids.get("run", path.stem),
        provenance={
            "source": "xdf",
            "file": str(path),
            "stream_name": _first(info, "name"),
            "stream_type": _first(info, "type"),
            "source_id": _first(info, "source_id"),
            "channel_mapping": mapping.describe(),
            "first_timestamp": float(stamps[0]),
            "n_cues": len(cues),
        },
    )


# -------------------------------------------------------------------------------------- dispatch


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(SUFFIX):
        return "rohde"
    if name.endswith(".xdf"):
        return "xdf"
    if name.endswith(".mat"):
        return "flexemg"
    return "unsupported"


def load_any(path: str | Path, **options: Any) -> Recording:
    """Load any supported file (`.rohde.npz`, flexemg `.mat`, `.xdf`); options go to its loader.

    Options: `twidth` for flexemg; `layout`, `gesture_names`, `stream_name`, `stream_type`,
    `stream_source_id`, `channels`, `marker_type`, `subject`, `session`, `trial`, `dejitter` for XDF.
    Options that do not apply to the file's kind are rejected.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordingFormatError(f"{str(path)!r} is not a file.")
    kind = _kind(path)
    allowed = {
        "rohde": set(),
        "flexemg": {"twidth"},
        "xdf": {"layout", "gesture_names", "stream_name", "stream_type", "stream_source_id", "channels",
                "marker_type", "subject", "session", "trial", "dejitter"},
    }.get(kind)
    if allowed is None:
        raise RecordingFormatError(
            f"Unsupported file {str(path)!r}; RoHDE reads {', '.join(SUPPORTED_SUFFIXES)} files."
        )
    unknown = set(options) - allowed
    if unknown:
        raise RecordingFormatError(
            f"Options {sorted(unknown)} do not apply to {kind} file {str(path)!r}; allowed: {sorted(allowed)}."
        )
    if kind == "rohde":
        try:
            return load_recording(path)
        except (zipfile.BadZipFile, EOFError) as exc:
            # load_recording lets a damaged zip container through; refuse it as a format error.
            raise RecordingFormatError(f"{str(path)!r} is not a RoHDE recording ({exc}).") from exc
    if kind == "flexemg":
        return load_flexemg_trial(path, **options)
    return load_xdf_recording(path, **options)


def find_recordings(path: str | Path) -> list[Path]:
    """A supported file itself, or every supported file under a folder (recursive, sorted)."""
    path = Path(path)
    if path.is_file():
        if _kind(path) == "unsupported":
            raise RecordingFormatError(
                f"Unsupported file {str(path)!r}; RoHDE reads {', '.join(SUPPORTED_SUFFIXES)} files."
            )
        return [path]
    if not path.is_dir():
        raise RecordingFormatError(f"{str(path)!r} is neither a file nor a folder.")
    found = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p) != "unsupported")
    # arraymap.mat beside the flexemg data is a layout file, not a trial.
    return [p for p in found if p.name != "arraymap.mat"]


def load_dataset(path: str | Path, **options: Any) -> list[Recording]:
    """Every recording under `path` (a file or a folder); raises when there is none."""
    paths = find_recordings(path)
    if not paths:
        raise RecordingFormatError(
            f"No recordings under {str(path)!r}; expected {', '.join(SUPPORTED_SUFFIXES)} files."
        )
    return [load_any(p, **options) for p in paths]
