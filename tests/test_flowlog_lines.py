"""The hand-written line formatter of the flow log (``flow_line``, ``dns_line``) writes exactly
what ``json.dumps`` with sorted keys writes of the line's dict (``flow_to_json``, ``dns_to_json``):
for flows and DNS observations drawn at random, with every optional field and strings that need
escaping, and for the logs of the examples in captures/."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from netpol_learn._capture import capture_files
from netpol_learn._flowlog import (DIRECTION_METHODS, ENTITIES, EVIDENCE, DnsAnswer, DnsObservation, Flow, Translation, _dumps,
                                   dns_line, dns_to_json, flow_line, flow_to_json)

ROOT = Path(__file__).resolve().parent.parent
counts = st.integers(min_value=0, max_value=2**53)
times = st.integers(min_value=0, max_value=4_102_444_800 * 10**9)
text = st.text(max_size=12)  # any unicode: quotes, backslashes, control characters, astral planes
ports = st.one_of(st.none(), st.integers(min_value=0, max_value=65535))


@st.composite
def flows(draw):
    first = draw(times)
    last = first + draw(st.integers(min_value=0, max_value=10**12))
    return Flow(
        src=draw(text), dst=draw(text), proto=draw(st.sampled_from(["TCP", "UDP", "ICMP", "IP-47"])), port=draw(ports),
        packets=draw(counts), bytes=draw(counts), connections=draw(counts), first_seen=first, last_seen=last,
        direction=tuple(sorted(draw(st.dictionaries(st.sampled_from(DIRECTION_METHODS), counts)).items(), key=lambda kv: DIRECTION_METHODS.index(kv[0]))),
        client_ports=tuple(draw(st.lists(st.integers(0, 65535), max_size=8))),
        translated=tuple(Translation(draw(text), draw(text), draw(ports)) for _ in range(draw(st.integers(0, 3)))),
        src_pods=tuple(draw(st.lists(text, max_size=2))), dst_pods=tuple(draw(st.lists(text, max_size=2))),
        evidence=draw(st.sampled_from(EVIDENCE)),
        runs=tuple((first, last, draw(counts)) for _ in range(draw(st.integers(1, 3)))),
        src_entity=draw(st.sampled_from(["", *ENTITIES[1:]])), dst_entity=draw(st.sampled_from(["", *ENTITIES[1:]])),
    )


@st.composite
def observations(draw):
    first = draw(times)
    return DnsObservation(
        client=draw(text), resolver=draw(text), qname=draw(text), qtype=draw(text), queries=draw(counts), responses=draw(counts),
        first_seen=first, last_seen=first + draw(st.integers(0, 10**12)),
        answers=tuple(DnsAnswer(draw(text), draw(text), draw(text), draw(counts)) for _ in range(draw(st.integers(0, 3)))),
        rcodes=tuple(draw(st.lists(text, max_size=2))), transports=tuple(draw(st.lists(text, max_size=2))),
    )


@settings(max_examples=400, deadline=None)
@given(flows())
def test_a_flow_line_is_what_json_dumps_writes(f):
    assert flow_line(f) == _dumps(flow_to_json(f))


@settings(max_examples=400, deadline=None)
@given(observations())
def test_a_dns_line_is_what_json_dumps_writes(d):
    assert dns_line(d) == _dumps(dns_to_json(d))


def test_the_examples_lines():
    log = capture_files(sorted(ROOT.glob("captures/*/capture.pcap")) + sorted((ROOT / "tests" / "data" / "hubble").glob("*.json")))
    assert log.flows and log.dns and any(f.translated for f in log.flows) and any(f.src_entity for f in log.flows)
    for f in log.flows:
        assert flow_line(f) == _dumps(flow_to_json(f))
    for d in log.dns:
        assert dns_line(d) == _dumps(dns_to_json(d))
