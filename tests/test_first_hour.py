"""What a new user meets in the first hour: the CLI's answers to ordinary mistakes.

Each test runs the real ``spinenode`` command in a subprocess, as a user would, and checks
the one line it prints and its exit code (2 for every bad setting)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import dicomgen
from nodeproc import REPO, Node
from peers import StorescpServer


def _spinenode(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPINENODE_")}
    return subprocess.run([sys.executable, "-m", "spinenode_app.cli", *args], env={**clean, **(env or {})},
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.timeout(1200)  # phantom (300 s) + send (600 s) + files on disk
def test_send_skips_the_side_files_of_a_phantom(tmp_path: Path) -> None:
    out = tmp_path / "phantom"
    r = _spinenode("phantom", str(out), "--studies", "1", "--seed", "7", "--matrix", "128", "--no-masks",
                   timeout=300)
    assert r.returncode == 0, r.stderr
    dicom = list(out.rglob("*.dcm"))
    others = [p for p in out.rglob("*") if p.is_file() and p.suffix != ".dcm"]
    assert dicom and others  # the CSV ground truth lies beside the images
    with StorescpServer(tmp_path / "pacs") as pacs:
        r = _spinenode("send", str(out), "--to", pacs.destination, "--timeout", "120", timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"sent {len(dicom)}, failed 0" in r.stdout
        assert f"skipped {len(others)} files that are not DICOM" in r.stdout
        assert len(pacs.wait_for_files(len(dicom))) == len(dicom)


@pytest.mark.parametrize("layout", ["file_in_path", "data_dir_is_a_file"])
def test_serve_with_unusable_data_dir_is_one_line_exit_2(tmp_path: Path, layout: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    data_dir = blocker / "data" if layout == "file_in_path" else blocker
    r = _spinenode("serve", env={"SPINENODE_DATA_DIR": str(data_dir), "SPINENODE_HTTP_PORT": "0",
                                 "SPINENODE_DICOM_PORT": "0"})
    assert r.returncode == 2
    assert "SPINENODE_DATA_DIR" in _one_line(r.stderr)


def test_public_http_without_token_exits_2_like_every_bad_setting(tmp_path: Path) -> None:
    r = _spinenode("serve", env={"SPINENODE_HTTP_HOST": "0.0.0.0", "SPINENODE_DATA_DIR": str(tmp_path)})
    assert r.returncode == 2
    assert "SPINENODE_ADMIN_TOKEN" in _one_line(r.stderr)


def test_bad_value_in_the_config_file_is_named_as_the_file_spells_it(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text("HTTP_PORT = 99999\n")
    r = _spinenode("serve", "--config", str(cfg), env={"SPINENODE_DATA_DIR": str(tmp_path / "d")})
    assert r.returncode == 2
    line = _one_line(r.stderr)
    assert f"HTTP_PORT in {cfg}" in line and "SPINENODE_HTTP_PORT" not in line


def test_status_of_a_data_dir_where_no_node_ran_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "spinenode-dta"
    r = _spinenode("status", env={"SPINENODE_DATA_DIR": str(missing)})
    assert r.returncode == 2
    assert "SPINENODE_DATA_DIR" in _one_line(r.stderr)
    assert not missing.exists()  # nothing created on the spot
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _spinenode("status", env={"SPINENODE_DATA_DIR": str(empty)})
    assert r.returncode == 2 and "no node database" in _one_line(r.stderr)
    assert list(empty.iterdir()) == []


def test_echo_prints_why_the_peer_refused(node_factory: Any) -> None:
    node: Node = node_factory(allowed_calling_aes="PACS")
    r = _spinenode("echo", f"WRONGAE@127.0.0.1:{node.dicom_port}", "--calling-ae", "PACS")
    assert r.returncode == 1
    assert "called ae title not recognised" in _one_line(r.stderr).lower()
    r = _spinenode("echo", f"SPINENODE@127.0.0.1:{node.dicom_port}", "--calling-ae", "INTRUDER")
    assert r.returncode == 1
    assert "calling ae title not recognised" in _one_line(r.stderr).lower()
    r = _spinenode("echo", f"SPINENODE@127.0.0.1:{node.dicom_port}", "--calling-ae", "PACS")
    assert r.returncode == 0 and "status 0x0000" in r.stdout


def test_node_log_is_about_the_node(node_factory: Any, tmp_path: Path) -> None:
    """Neither kombu's hostname warning (embedded broker) nor highdicom's INFO narration."""
    node: Node = node_factory()
    study = dicomgen.write_study(tmp_path / "study", seed=5)
    r = _spinenode("send", str(tmp_path / "study"), "--to", f"SPINENODE@127.0.0.1:{node.dicom_port}")
    assert r.returncode == 0, r.stderr
    node.wait_state(study.study_uid, {"DONE", "FAILED"}, timeout=300)
    log = node.log()
    assert "No hostname was supplied" not in log
    assert not [line for line in log.splitlines() if " INFO " in line and " highdicom" in line]
    assert "spinenode serving" in log  # the log is there, and is the node's


@pytest.mark.timeout(900)
def test_demo_succeeds_and_leaves_no_temporary_directory(tmp_path: Path) -> None:
    """The README's first command, as a user runs it (without ``--keep``)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = _spinenode("demo", "--timeout", "600", env={"TMPDIR": str(tmp)}, cwd=tmp_path, timeout=840)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "PRELIMINARY, NOT A DIAGNOSIS" in r.stdout and "L4-L5" in r.stdout
    assert "removed " in r.stdout
    assert list(tmp.glob("spinenode-demo-*")) == []  # (torch keeps a cache of its own there)


def test_license_is_an_spdx_expression() -> None:
    """The ``license = {text = ...}`` table is deprecated and stops building in 2027."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
