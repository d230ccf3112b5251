"""Smoke tests: each real peer starts, answers and stops; dicomgen output is valid."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psycopg
import pydicom
import pytest
import redis
import sqlalchemy as sa
from pydicom.uid import JPEGLosslessSV1, JPEGLSLossless

import dicomgen
from dicomgen import SeriesSpec
from peer_fixtures import OrthancFactory
from peers import (
    LOOPBACK,
    PeerError,
    PostgresServer,
    RedisServer,
    StorescpServer,
    dciodvfy,
    dcmtk_tool,
    echoscu,
    free_port,
    storescu,
    wait_for_port,
    wait_until,
)

SMALL = (SeriesSpec("SAG T2", "sagittal", 3, "T2"), SeriesSpec("AX T2", "axial", 2, "T2"))


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_wait_helpers_time_out_with_a_clear_message() -> None:
    port = free_port()
    with pytest.raises(TimeoutError, match=f"{LOOPBACK}:{port}"):
        wait_for_port(LOOPBACK, port, timeout=0.2)
    with pytest.raises(TimeoutError, match="the moon"):
        wait_until(lambda: False, 0.1, what="the moon")
    assert wait_until(lambda: 42, 0.1) == 42


def test_dcmtk_tool_is_dcmtk_not_the_venv_script() -> None:
    assert dcmtk_tool("storescu") == "/usr/bin/storescu"


def test_echo_and_store_to_storescp(storescp_server: StorescpServer, tmp_path: Path) -> None:
    echo = echoscu(LOOPBACK, storescp_server.port, storescp_server.ae_title)
    assert echo.returncode == 0, echo.stderr

    study = dicomgen.write_study(tmp_path / "study", series=SMALL)
    sent = storescu(tmp_path / "study", LOOPBACK, storescp_server.port,
                    storescp_server.ae_title, check=True)
    assert sent.returncode == 0
    received = storescp_server.wait_for_files(len(study.paths))
    uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in received}
    assert uids == {pydicom.dcmread(p).SOPInstanceUID for p in study.paths}

    pid = storescp_server.pid
    assert pid is not None
    storescp_server.stop()
    assert _pid_gone(pid)


def test_redis_ping_kill_and_restart_on_same_port(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    assert client.ping()
    client.set("k", "v")
    port = redis_server.port

    redis_server.kill()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    redis_server.start()
    assert redis_server.port == port
    assert client.ping()
    assert client.get("k") is None  # no persistence
    client.close()


def test_postgres_select_and_restart(postgres_server: PostgresServer, postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        conn.execute(sa.text("CREATE TABLE t (x int)"))
        conn.execute(sa.text("INSERT INTO t VALUES (7)"))
    engine.dispose()

    postgres_server.kill()
    postgres_server.start()
    with psycopg.connect(postgres_server.dsn_for(postgres_url.rsplit("/", 1)[1])) as conn:
        assert conn.execute("SELECT x FROM t").fetchone() == (7,)

    postgres_server.restart()
    with psycopg.connect(postgres_server.dsn) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("spinenode",)


def test_orthanc_upload_list_download_and_store(
    orthanc_factory: OrthancFactory, storescp_server: StorescpServer, tmp_path: Path
) -> None:
    study = dicomgen.write_study(tmp_path / "study", series=SMALL[:1])
    orthanc = orthanc_factory(
        modalities={"SCP": (storescp_server.ae_title, LOOPBACK, storescp_server.port)})
    instance_id = orthanc.upload(study.paths[0])
    assert orthanc.instances() == [instance_id]
    assert pydicom.dcmread(study.paths[0]).SOPInstanceUID == pydicom.dcmread(
        pydicom.filebase.DicomBytesIO(orthanc.download(instance_id))).SOPInstanceUID

    storescu(study.paths[1:], LOOPBACK, orthanc.dicom_port, orthanc.ae_title, check=True)
    assert len(orthanc.wait_for_instances(len(study.paths))) == len(study.paths)
    [study_id] = orthanc.find_by_study_uid(study.study_uid)
    assert orthanc.studies() == [study_id]

    orthanc.echo_modality("SCP")
    orthanc.store_to_modality("SCP", [study_id])
    assert len(storescp_server.wait_for_files(len(study.paths))) == len(study.paths)


def test_dicomgen_study_is_valid(tmp_path: Path) -> None:
    series = (*SMALL, SeriesSpec("SAG STIR", "sagittal", 2, "STIR"),
              SeriesSpec("COR T1", "coronal", 2, "T1"))
    study = dicomgen.write_study(tmp_path, series=series, seed=5)
    assert len(study.series_uids) == len(series)
    for uid in study.series_uids:
        for path in (study.series_paths[uid][0], study.series_paths[uid][-1]):
            result = dciodvfy(path)
            assert result.errors == [], result.output
    again = dicomgen.write_study(tmp_path / "again", series=series, seed=5)
    assert again.study_uid == study.study_uid
    assert (dicomgen.write_study(tmp_path / "other", series=series, seed=6).study_uid
            != study.study_uid)


def test_dicomgen_ct_is_valid(tmp_path: Path) -> None:
    study = dicomgen.write_study(tmp_path, modality="CT", body_part="CSPINE", series=SMALL,
                                 study_description="CT CERVICAL SPINE WO", bits=12)
    for path in study.paths[:1] + study.paths[-1:]:
        assert dciodvfy(path).errors == []
    assert pydicom.dcmread(study.paths[0]).SOPClassUID == pydicom.uid.CTImageStorage


def test_write_files_for_benchmarks(tmp_path: Path) -> None:
    generated = dicomgen.write_files(5, tmp_path, rows=128, cols=128)
    datasets = [pydicom.dcmread(p) for p in generated.paths]
    assert len({ds.SOPInstanceUID for ds in datasets}) == 5
    assert {ds.SeriesInstanceUID for ds in datasets} == set(generated.series_uids)
    assert dciodvfy(generated.paths[0]).errors == []


@pytest.mark.parametrize(("kind", "syntax"), [("jpegls", JPEGLSLossless),
                                              ("jpeg-lossless", JPEGLosslessSV1)])
def test_compress_gives_expected_transfer_syntax(tmp_path: Path, kind: str,
                                                 syntax: pydicom.uid.UID) -> None:
    study = dicomgen.write_study(tmp_path / "in", series=SMALL[:1])
    [out] = dicomgen.compress(study.paths[:1], tmp_path / kind, kind)
    compressed = pydicom.dcmread(out)
    assert compressed.file_meta.TransferSyntaxUID == syntax
    original = pydicom.dcmread(study.paths[0])
    assert (compressed.pixel_array == original.pixel_array).all()  # lossless


def test_compressed_files_need_compressed_proposals(storescp_server: StorescpServer,
                                                    tmp_path: Path) -> None:
    study = dicomgen.write_study(tmp_path / "in", series=SMALL[:1])
    files = dicomgen.compress(study.paths, tmp_path / "jls", "jpegls")
    storescu(files, LOOPBACK, storescp_server.port, storescp_server.ae_title,
             extra_args=("-xt",), check=True)
    received = storescp_server.wait_for_files(len(files))
    assert {pydicom.dcmread(p).file_meta.TransferSyntaxUID for p in received} == {JPEGLSLossless}


@pytest.mark.parametrize("peer", [RedisServer, StorescpServer])
def test_port_taken_fails_with_log_tail(tmp_path: Path,
                                        peer: type[RedisServer | StorescpServer]) -> None:
    # A connect() to the port would succeed: readiness must check who listens.
    with socket.socket() as blocker:
        blocker.bind(("", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(PeerError, match=r"(?s)exited with status.*[Aa]ddress already in use"):
            peer(tmp_path / "peer", port=port).start()
