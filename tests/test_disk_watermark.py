"""Disk watermark on a real (small) tmpfs: refuse while full, resume by itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodeproc import Node
from peers import echoscu, wait_until


def test_watermark_refuses_then_resumes(node_factory: Any, small_disk: Path, tmp_path: Path) -> None:
    node: Node = node_factory(disk_min_free_mb=32, start=False)
    node.data_dir = small_disk / "data"
    node.env["SPINENODE_DATA_DIR"] = str(node.data_dir)
    node.database_url = f"sqlite:///{node.data_dir / 'spinenode.db'}"
    node.start()
    assert echoscu("127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (40 * 2**20))  # leaves under 32 MB free
    wait_until(lambda: echoscu("127.0.0.1", node.dicom_port, "SPINENODE").returncode != 0, 10,
               what="the node to refuse associations")
    assert "refusing new associations" in node.log()
    import httpx

    metrics = httpx.get(node.url("/metrics"), timeout=10).text
    assert 'spinenode_associations_rejected_total{reason="disk_low"}' in metrics
    filler.unlink()
    wait_until(lambda: echoscu("127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0, 10,
               what="the node to accept associations again")
    assert "accepting associations" in node.log()
