"""Node and workers as separate processes with SEPARATE data directories: the workers
have only BROKER_URL, DATABASE_URL and NODE_URL, so every file they need travels over
the node's WADO-RS and every result over STOW-RS. Real Redis, PostgreSQL and Orthanc;
a phantom lumbar MR study analysed with the shipped weights; SR, SEG and key image
reach Orthanc."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from nodeproc import Node, SpinenodeProcess
from peers import OrthancServer, free_port, storescu, wait_until

TOKEN = "two-host-worker-token"


def _phantom(out: Path, seed: int) -> list[Path]:
    subprocess.run([sys.executable, "-m", "spinenode_app.cli", "phantom", str(out), "--studies", "1", "--region",
                    "lumbar", "--modality", "MR", "--seed", str(seed)], check=True, capture_output=True)
    return sorted((out / "train_images").rglob("*.dcm"))


def remote_worker(workdir: Path, node: Node, queues: str, node_url: str | None = None) -> SpinenodeProcess:
    """A worker that shares nothing with the node but the broker, the database and its URL."""
    env = {k: v for k, v in node.env.items() if k in (
        "SPINENODE_BROKER_URL", "SPINENODE_DATABASE_URL", "SPINENODE_DESTINATIONS", "SPINENODE_LOG_LEVEL",
        "SPINENODE_WORKER_TOKEN")}
    env.update({"SPINENODE_DATA_DIR": str(workdir / "data"), "SPINENODE_NODE_URL": node_url or node.url(""),
                "SPINENODE_DEVICE": "cpu"})
    workdir.mkdir(parents=True, exist_ok=True)
    return SpinenodeProcess(workdir, ["worker", "--queues", queues], env, f"worker-{queues.replace(',', '-')}")


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_workers_with_their_own_data_dirs_reach_done_with_results_in_orthanc(
    node_factory: Any, orthanc_factory: Any, redis_server: Any, postgres_url: str, tmp_path: Path
) -> None:
    """The gpu worker reaches the node's HTTP through a port where nothing listens at
    first: the study goes back to QUEUED with a reason naming that address (admin API);
    once the port forwards to the node, the sweep's retry after REQUEUE_AFTER finishes it."""
    from netns import TcpRelay

    orthanc: OrthancServer = orthanc_factory()
    node: Node = node_factory(broker_url=redis_server.url, database_url=postgres_url, stable_seconds=2,
                              destinations=orthanc.destination, worker_token=TOKEN, requeue_after=6)
    files = _phantom(tmp_path / "phantom", seed=2027)
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    way_in = free_port()
    gpu = remote_worker(tmp_path / "gpu-host", node, "gpu", node_url=f"http://127.0.0.1:{way_in}")
    cpu = remote_worker(tmp_path / "cpu-host", node, "cpu,export")
    gpu.start()
    cpu.start()
    relay: TcpRelay | None = None
    try:
        r = storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE")
        assert r.returncode == 0, r.stderr
        waiting = wait_until(lambda: (row := node.study(study_uid)) and row["state"] == "QUEUED"
                             and row["reason"] and row, 240, interval=0.2, what="QUEUED, waiting for the node")
        assert f"127.0.0.1:{way_in}" in waiting["reason"] and "waiting for the node" in waiting["reason"], waiting
        relay = TcpRelay("127.0.0.1", node.http_port, listen_port=way_in)  # the node is reachable again
        final = node.wait_state(study_uid, {"DONE", "FAILED"}, timeout=300)
        assert final["state"] == "DONE", (final["reason"], gpu.log()[-3000:], cpu.log()[-3000:])
        assert sorted(x["kind"] for x in final["results"]) == ["key-images", "seg", "sr"]
        wait_until(lambda: len(orthanc.study_instances(study_uid)) == 3, 30, what="3 results in Orthanc")
        modalities = sorted(str(dcmread(io.BytesIO(orthanc.download(i)), stop_before_pixels=True).Modality)
                            for i in orthanc.study_instances(study_uid))
        assert modalities == ["OT", "SEG", "SR"]
        # the node holds the results; the workers never had the received images on their DATA_DIR
        held = {p.stem for p in (node.data_dir / "results" / study_uid).glob("*.dcm")}
        assert held == {x["sop_instance_uid"] for x in final["results"]}
        for w in (gpu, cpu):
            assert not list((w.workdir / "data" / "incoming").rglob("*.dcm")), w.workdir
        assert "fetched" in gpu.log() and "analyzer warmed up" in gpu.log()
        assert final["reason"] is None
        assert any("requeued by the sweep" in (e["detail"] or "") for e in final["events"])
    finally:
        gpu.stop()
        cpu.stop()
        if relay is not None:
            relay.close()


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_kill9_of_the_worker_mid_fetch_and_of_the_node_mid_upload_gives_one_result_set(
    node_factory: Any, orthanc_factory: Any, redis_server: Any, postgres_url: str, tmp_path: Path
) -> None:
    """The gpu worker is killed while the study is ANALYZING (fetching or analysing), the
    node while the study is ENCODING (the cpu worker fetching headers and storing results
    on it). The sweep requeues, a new worker and the restarted node finish: one SR, one
    SEG, one key image in Orthanc."""
    orthanc: OrthancServer = orthanc_factory()
    node: Node = node_factory(broker_url=redis_server.url, database_url=postgres_url, stable_seconds=2,
                              destinations=orthanc.destination, worker_token=TOKEN, requeue_after=8,
                              export_retry_base=1)
    files = _phantom(tmp_path / "phantom", seed=2028)
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    first_gpu = remote_worker(tmp_path / "gpu-1", node, "gpu")
    cpu = remote_worker(tmp_path / "cpu-host", node, "cpu,export")
    first_gpu.start()
    cpu.start()
    workers = [first_gpu, cpu]
    try:
        wait_until(lambda: "analyzer warmed up" in first_gpu.log(), 120, what="the first gpu worker warmed up")
        assert storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0
        node.wait_state(study_uid, {"ANALYZING"}, timeout=60)
        first_gpu.kill9()
        second_gpu = remote_worker(tmp_path / "gpu-2", node, "gpu")
        second_gpu.start()
        workers.append(second_gpu)
        node.wait_state(study_uid, {"ENCODING"}, timeout=240)
        node.proc.send_signal(9)  # type: ignore[union-attr]  # the node only, mid-encode
        node.proc.wait()  # type: ignore[union-attr]
        node.start()
        final = node.wait_state(study_uid, {"DONE", "FAILED"}, timeout=240)
        assert final["state"] == "DONE", (final["reason"], second_gpu.log()[-2000:], cpu.log()[-3000:])
        wait_until(lambda: len(orthanc.study_instances(study_uid)) >= 3, 30, what="results in Orthanc")
        modalities = sorted(str(dcmread(io.BytesIO(orthanc.download(i)), stop_before_pixels=True).Modality)
                            for i in orthanc.study_instances(study_uid))
        assert modalities == ["OT", "SEG", "SR"]  # exactly one result set
        assert any("requeued by the sweep" in (e["detail"] or "") for e in final["events"])
    finally:
        for w in workers:
            w.stop()


class NamespacedProcess(SpinenodeProcess):
    """A ``spinenode`` command started inside another network namespace (nsenter)."""

    def __init__(self, prefix: list[str], workdir: Path, command: list[str], env: dict[str, str], name: str) -> None:
        super().__init__(workdir, command, env, name)
        self.prefix = prefix

    def start(self) -> None:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "spinenode_app.cli", *self.command],
                                         cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="making network namespaces needs root")
@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_two_hosts_in_network_namespaces(tmp_path: Path) -> None:
    """A node host and a worker host: two network namespaces made here, a veth pair with
    10.217.17.1 (node) and .2 (worker) that exists only inside them. The node host runs
    Redis, PostgreSQL, Orthanc and spinenode serve; the worker host runs the gpu and
    cpu/export workers with their own DATA_DIRs and only BROKER_URL, DATABASE_URL and
    NODE_URL pointing at 10.217.17.1. Its loopback has nothing of the node's."""
    from netns import NetNamespace, link

    node_host, worker_host = NetNamespace(), NetNamespace()
    try:
        ip_node, _ip_worker = link(node_host, worker_host)
        # This thread lives on the node host for the whole test, so the peers it starts and
        # stops, and every connection it makes, stay in the node host's namespace.
        with node_host.entered(), ExitStack() as stack:
            _two_hosts(stack, tmp_path, worker_host, ip_node)
    finally:
        worker_host.close()
        node_host.close()


def _two_hosts(stack: ExitStack, tmp_path: Path, worker_host: Any, ip_node: str) -> None:
    from netns import TcpRelay
    from peers import PostgresServer, RedisServer

    files = _phantom(tmp_path / "phantom", seed=2029)
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    redis = stack.enter_context(RedisServer(tmp_path / "redis"))
    pg = stack.enter_context(PostgresServer())
    database = pg.unique_database()
    # the test peers bind loopback only: relays on the node host's veth address
    redis_relay, pg_relay = TcpRelay(ip_node, redis.port), TcpRelay(ip_node, pg.port)
    stack.callback(redis_relay.close)
    stack.callback(pg_relay.close)
    orthanc = OrthancServer(tmp_path / "orthanc").start()
    stack.callback(orthanc.close)
    destination = f"ORTHANC@{ip_node}:{orthanc.dicom_port}"  # Orthanc listens on every interface
    node = Node(tmp_path / "node", broker_url=redis.url, database_url=pg.url_for(database),
                stable_seconds=2, destinations=destination, worker_token=TOKEN,
                http_host="0.0.0.0", admin_token="two-host-admin")
    stack.callback(node.close)
    node.start()
    env = {
        "SPINENODE_BROKER_URL": f"redis://{ip_node}:{redis_relay.port}/0",
        "SPINENODE_DATABASE_URL": f"postgresql+psycopg://{pg.user}@{ip_node}:{pg_relay.port}/{database}",
        "SPINENODE_NODE_URL": f"http://{ip_node}:{node.http_port}",
        "SPINENODE_WORKER_TOKEN": TOKEN, "SPINENODE_DESTINATIONS": destination,
        "SPINENODE_DEVICE": "cpu", "SPINENODE_LOG_LEVEL": "INFO",
    }
    workers = []
    for queues in ("gpu", "cpu,export"):
        workdir = tmp_path / f"worker-host-{queues.replace(',', '-')}"
        workdir.mkdir()
        w = NamespacedProcess(worker_host.prefix, workdir, ["worker", "--queues", queues],
                              {**env, "SPINENODE_DATA_DIR": str(workdir / "data")}, f"worker-{queues}")
        w.start()
        stack.callback(w.stop)
        workers.append(w)
    # the worker host really is another host: the node's loopback ports are not there
    probe = subprocess.run([*worker_host.prefix, sys.executable, "-c",
                            f"import socket; socket.create_connection(('127.0.0.1', {node.http_port}), 2)"],
                           capture_output=True, timeout=30)
    assert probe.returncode != 0
    r = storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE")
    assert r.returncode == 0, r.stderr
    final = node.wait_state(study_uid, {"DONE", "FAILED"}, timeout=300)
    assert final["state"] == "DONE", (final["reason"], *(w.log()[-2000:] for w in workers))
    wait_until(lambda: len(orthanc.study_instances(study_uid)) == 3, 30, what="3 results in Orthanc")
    modalities = sorted(str(dcmread(io.BytesIO(orthanc.download(i)), stop_before_pixels=True).Modality)
                        for i in orthanc.study_instances(study_uid))
    assert modalities == ["OT", "SEG", "SR"]
    assert "fetched" in workers[0].log()
    for w in workers:
        assert not list((w.workdir / "data" / "incoming").rglob("*.dcm"))
