"""Node and workers as separate processes with SEPARATE data directories: the workers
have only BROKER_URL, DATABASE_URL and NODE_URL, so every file they need travels over
the node's WADO-RS and every result over STOW-RS. Real Redis, PostgreSQL and Orthanc;
a phantom lumbar MR study analysed with the shipped weights; SR, SEG and key image
reach Orthanc."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from nodeproc import Node, SpinenodeProcess
from peers import OrthancServer, storescu, wait_until

TOKEN = "two-host-worker-token"


def _phantom(out: Path, seed: int) -> list[Path]:
    subprocess.run([sys.executable, "-m", "scp_node.cli", "phantom", str(out), "--studies", "1", "--region",
                    "lumbar", "--modality", "MR", "--seed", str(seed)], check=True, capture_output=True)
    return sorted((out / "train_images").rglob("*.dcm"))


def remote_worker(workdir: Path, node: Node, queues: str) -> SpinenodeProcess:
    """A worker that shares nothing with the node but the broker, the database and its URL."""
    env = {k: v for k, v in node.env.items() if k in (
        "SPINENODE_BROKER_URL", "SPINENODE_DATABASE_URL", "SPINENODE_DESTINATIONS", "SPINENODE_LOG_LEVEL",
        "SPINENODE_WORKER_TOKEN")}
    env.update({"SPINENODE_DATA_DIR": str(workdir / "data"), "SPINENODE_NODE_URL": node.url(""),
                "SPINENODE_DEVICE": "cpu"})
    workdir.mkdir(parents=True, exist_ok=True)
    return SpinenodeProcess(workdir, ["worker", "--queues", queues], env, f"worker-{queues.replace(',', '-')}")


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_workers_with_their_own_data_dirs_reach_done_with_results_in_orthanc(
    node_factory: Any, orthanc_factory: Any, redis_server: Any, postgres_url: str, tmp_path: Path
) -> None:
    orthanc: OrthancServer = orthanc_factory()
    node: Node = node_factory(broker_url=redis_server.url, database_url=postgres_url, stable_seconds=2,
                              destinations=orthanc.destination, worker_token=TOKEN)
    files = _phantom(tmp_path / "phantom", seed=2027)
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    gpu = remote_worker(tmp_path / "gpu-host", node, "gpu")
    cpu = remote_worker(tmp_path / "cpu-host", node, "cpu,export")
    gpu.start()
    cpu.start()
    try:
        r = storescu(files, "127.0.0.1", node.dicom_port, "SPINENODE")
        assert r.returncode == 0, r.stderr
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
    finally:
        gpu.stop()
        cpu.stop()


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
