"""DICOM TLS with self-signed certificates made here: DCMTK storescu +tls into the node,
and the node's export over TLS to a DCMTK storescp +tls."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import dicomgen
from nodeproc import Node
from peers import dcmtk_env, free_port, listens_on, storescu, wait_until
from spinenode.core.db.models import Instance


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["/usr/bin/openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=spinenode test CA", cwd=d)
    for name in ("node", "peer"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


def test_storescu_over_tls_and_export_over_tls(node_factory: Any, pki: Path, tmp_path: Path) -> None:
    # a TLS destination: DCMTK storescp requiring our client certificate
    pacs_port = free_port()
    out = tmp_path / "pacs"
    out.mkdir()
    pacs = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "TLSPACS", "+tls", str(pki / "peer.key"), str(pki / "peer.crt"),
         "+cf", str(pki / "ca.crt"), "--require-peer-cert", "-od", str(out), "+xa", str(pacs_port)],
        env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: listens_on(pacs.pid, pacs_port), 10, what="storescp +tls")
        tls_port = free_port()
        node: Node = node_factory(
            dicom_tls_port=tls_port, tls_cert=pki / "node.crt", tls_key=pki / "node.key", tls_ca=pki / "ca.crt",
            destinations=f"TLSPACS@127.0.0.1:{pacs_port};tls",
        )
        assert node.proc is not None
        wait_until(lambda: listens_on(node.proc.pid, tls_port), 10, what="the node's TLS port")  # type: ignore[union-attr]
        study = dicomgen.write_study(tmp_path / "ax", seed=81, series=(dicomgen.SeriesSpec("AX T2", "axial", 6),))
        tls_args = ("+tls", str(pki / "peer.key"), str(pki / "peer.crt"), "+cf", str(pki / "ca.crt"))
        r = storescu(study.paths, "127.0.0.1", tls_port, "SPINENODE", extra_args=tls_args)
        assert r.returncode == 0, r.stdout + r.stderr
        with node.db.session() as s:
            assert s.scalar(select(func.count()).select_from(Instance)) == len(study.paths)
        # a client without a certificate is refused at the TLS handshake
        anon = storescu(study.paths[:1], "127.0.0.1", tls_port, "SPINENODE", extra_args=("+tla",))
        assert anon.returncode != 0
        # plain DICOM on the TLS port fails too
        assert storescu(study.paths[:1], "127.0.0.1", tls_port, "SPINENODE").returncode != 0

        final = node.wait_state(study.study_uid, {"DONE", "FAILED"}, timeout=90)
        assert final["state"] == "DONE", final
        assert final["exports"][0]["destination"].endswith(";tls")
        wait_until(lambda: list(out.iterdir()), 10, what="the SR at the TLS PACS")
        assert len(list(out.iterdir())) == 1
    finally:
        pacs.terminate()
        pacs.wait(10)


def test_tls_port_needs_certificates(tmp_path: Path) -> None:
    from spinenode.core.errors import ConfigError
    from spinenode.core.settings import load_settings

    with pytest.raises(ConfigError, match="TLS_CERT"):
        load_settings(data_dir=tmp_path, dicom_tls_port=2762)
    with pytest.raises(ConfigError, match="not a readable file"):
        load_settings(data_dir=tmp_path, tls_cert=tmp_path / "missing.crt")
