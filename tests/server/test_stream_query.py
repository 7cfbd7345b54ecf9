"""Stream names with quotes resolve through the XPath query exactly, and never widen it."""

from __future__ import annotations

import uuid

import numpy as np

from rohde.server.lsl_inlet import StreamQuery, import_pylsl, resolve, xpath_literal

from .conftest import LSL_CONFIG


def test_xpath_literal_quotes_whatever_the_value_holds() -> None:
    assert xpath_literal("amp") == "'amp'"
    assert xpath_literal("Bob's amp") == '"Bob\'s amp"'
    assert xpath_literal('a "b"') == "'a \"b\"'"
    assert xpath_literal("it's \"x\"") == "concat('it', \"'\", 's \"x\"')"


def test_names_with_quotes_resolve_only_their_stream() -> None:
    pylsl = import_pylsl(LSL_CONFIG)
    tag = uuid.uuid4().hex[:8]
    names = [f"Bob's amp {tag}", f'the "best" amp {tag}', f"it's \"both\" {tag}"]
    infos = [pylsl.StreamInfo(name, "EMG", 2, 100.0, pylsl.cf_float32, f"{tag}-{i}") for i, name in enumerate(names)]
    outlets = [pylsl.StreamOutlet(info) for info in infos]
    try:
        for outlet in outlets:
            outlet.push_sample(np.zeros(2, dtype=np.float32))
        for i, name in enumerate(names):
            found = resolve(StreamQuery(name=name), timeout_s=2.0, lsl_config=LSL_CONFIG)
            assert [info.source_id() for info in found] == [f"{tag}-{i}"]
        # A quote cannot end the literal early and turn the rest into query syntax.
        assert resolve(StreamQuery(name=f"x' or name!='{tag}"), timeout_s=1.0, lsl_config=LSL_CONFIG) == []
    finally:
        del outlets


def test_several_source_ids_select_a_set_of_streams() -> None:
    query = StreamQuery(name="amp", type=("EMG", "ExG"), source_id="a, b's")
    assert query.source_ids == ("a", "b's")
    predicate = query.predicate()
    assert predicate.startswith("name='amp' and (") and predicate.endswith("(source_id='a' or source_id=\"b's\")")
    assert query.describe().startswith("name='amp' and type in EMG, ExG and source_id in 'a', \"b's\"")
    pylsl = import_pylsl(LSL_CONFIG)
    tag = uuid.uuid4().hex[:8]
    infos = [pylsl.StreamInfo(f"amp {tag}", "EMG", 2, 100.0, pylsl.cf_float32, f"{tag}-{i}") for i in range(3)]
    outlets = [pylsl.StreamOutlet(info) for info in infos]
    try:
        found = resolve(StreamQuery(name=f"amp {tag}", source_id=f"{tag}-0,{tag}-2"), timeout_s=2.0,
                        lsl_config=LSL_CONFIG)
        assert sorted(info.source_id() for info in found) == [f"{tag}-0", f"{tag}-2"]
    finally:
        del outlets
