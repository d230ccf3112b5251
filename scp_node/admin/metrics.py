"""Prometheus ``/metrics``: read at scrape time from the node's counters, the database
and the broker, so every process (node, workers) is reflected without push gateways."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import func, select

from spinenode.core.db.models import Event, Export, ExportState, Study, StudyState, WorkerHeartbeat, utcnow
from spinenode.core.db.session import Database
from scp_node.queue_status import WORKER_STALE_S

#: Seconds; covers a quiet period of minutes and analyses of seconds.
BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)

#: (metric stage label, from state, to states) measured on the events of one generation.
STAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("received_to_complete", "RECEIVING", ("COMPLETE",)),
    ("complete_to_analysed", "COMPLETE", ("ENCODING",)),
    ("analysed_to_encoded", "ENCODING", ("EXPORTING", "DONE")),
    ("encoded_to_stored", "EXPORTING", ("DONE",)),
    ("total", "RECEIVING", ("DONE",)),
)


def stage_durations(events: list[tuple[int, int, str, dt.datetime]]) -> dict[str, list[float]]:
    """Durations per stage from (study id, generation, state, at) rows sorted by time.

    The first entry into the ``from`` state and the first later entry into a ``to``
    state of the same study generation bound a stage.
    """
    first: dict[tuple[int, int], dict[str, dt.datetime]] = defaultdict(dict)
    for study_id, generation, state, at in events:
        first[(study_id, generation)].setdefault(state, at)
    out: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    for states in first.values():
        for name, start, ends in STAGES:
            if start not in states:
                continue
            t_end = min((states[e] for e in ends if e in states and states[e] >= states[start]), default=None)
            if t_end is not None:
                out[name].append((t_end - states[start]).total_seconds())
    return out


def _histogram(name: str, doc: str, samples: dict[str, list[float]]) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, doc, labels=["stage"])
    for stage, values in samples.items():
        buckets = [(str(b), float(sum(v <= b for v in values))) for b in BUCKETS]
        buckets.append(("+Inf", float(len(values))))
        h.add_metric([stage], buckets, sum_value=float(sum(values)))
    return h


class NodeCollector:
    def __init__(self, db: Database, counters: Any, depths: Callable[[], dict[str, int | None]]) -> None:
        self.db = db
        self.counters = counters
        self.depths = depths

    def collect(self) -> Iterator[Metric]:
        c = self.counters
        with c.lock:
            instances, nbytes, accepted = c.instances, c.bytes, c.associations
            rejected, failures = dict(c.rejected), dict(c.failures)
            own_results = c.own_results
        yield CounterMetricFamily("spinenode_instances_received", "Instances stored and acknowledged", value=instances)
        yield CounterMetricFamily("spinenode_bytes_received", "Bytes of acknowledged instances", value=nbytes)
        yield CounterMetricFamily("spinenode_associations_accepted", "DICOM associations accepted", value=accepted)
        yield CounterMetricFamily("spinenode_own_results_ignored",
                                  "The node's own results sent back to it: acknowledged, not stored", value=own_results)
        rej = CounterMetricFamily("spinenode_associations_rejected", "DICOM associations refused", labels=["reason"])
        for reason, n in sorted(rejected.items()):
            rej.add_metric([reason], n)
        yield rej
        fail = CounterMetricFamily("spinenode_store_failures", "C-STORE requests refused", labels=["status"])
        for code, n in sorted(failures.items()):
            fail.add_metric([f"0x{code:04X}" if code >= 0 else "other"], n)
        yield fail

        now = utcnow()
        with self.db.session() as s:
            states = dict(s.execute(select(Study.state, func.count()).group_by(Study.state)).all())
            exports = s.execute(select(Export.state, func.count(), func.sum(Export.attempts)).group_by(Export.state)).all()
            workers = s.execute(select(WorkerHeartbeat.hostname, WorkerHeartbeat.queues, WorkerHeartbeat.last_seen)).all()
            events = s.execute(
                select(Event.study_id, Event.generation, Event.state, Event.at).order_by(Event.at, Event.id)
            ).all()
        g = GaugeMetricFamily("spinenode_studies", "Studies by current state", labels=["state"])
        for state in StudyState:
            g.add_metric([str(state)], float(states.get(str(state), 0)))
        yield g
        attempts = CounterMetricFamily("spinenode_export_attempts", "C-STORE export attempts", labels=["state"])
        failed_attempts = 0
        for state, n, total in exports:
            attempts.add_metric([state], float(total or 0))
            failed_attempts += int(total or 0) - (int(n) if state == ExportState.SENT else 0)
        yield attempts
        yield CounterMetricFamily("spinenode_export_failures", "Export attempts that did not store", value=failed_attempts)
        depth = GaugeMetricFamily("spinenode_queue_depth", "Messages waiting per Celery queue", labels=["queue"])
        for q, n in self.depths().items():
            if n is not None:
                depth.add_metric([q], float(n))
        yield depth
        hb = GaugeMetricFamily("spinenode_worker_heartbeat_age_seconds", "Seconds since a worker's last heartbeat",
                               labels=["hostname", "queues"])
        online = 0
        for host, queues, seen in workers:
            age = (now - seen).total_seconds()
            online += age < WORKER_STALE_S
            hb.add_metric([host, queues], age)
        yield hb
        yield GaugeMetricFamily("spinenode_workers_online", "Workers with a recent heartbeat", value=online)
        yield _histogram("spinenode_stage_seconds", "Time per pipeline stage (per study generation)",
                         stage_durations([tuple(r) for r in events]))  # type: ignore[misc]


def metrics_text(collector: NodeCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry)
