"""Both receiver counter classes satisfy one declared interface, and say whether they can be
handed to receiver worker processes (what an isinstance on the class used to decide)."""

from __future__ import annotations

import inspect

from scp_node.counters import ReceiverCounters, SharedScpCounters
from scp_node.scp import ScpCounters

MEMBERS = ("lock", "associations", "instances", "bytes", "own_results", "failures", "rejected",
           "stored", "own_result", "failed", "reject", "shared_across_processes")


def test_both_counter_kinds_are_receiver_counters() -> None:
    plain, shared = ScpCounters(), SharedScpCounters()
    assert isinstance(plain, ReceiverCounters) and isinstance(shared, ReceiverCounters)
    assert not isinstance(object(), ReceiverCounters)
    assert plain.shared_across_processes is False and shared.shared_across_processes is True


def test_the_protocol_names_every_member_the_handlers_and_metrics_use() -> None:
    declared = {n for n in dir(ReceiverCounters) if not n.startswith("_")} | set(
        inspect.get_annotations(ReceiverCounters))
    assert set(MEMBERS) <= declared
    for kind in (ScpCounters, SharedScpCounters):
        for name in ("stored", "own_result", "failed", "reject"):
            theirs = inspect.signature(getattr(kind, name))
            ours = inspect.signature(getattr(ReceiverCounters, name))
            assert list(theirs.parameters) == list(ours.parameters), (kind.__name__, name)
