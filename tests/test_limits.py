"""Association limits and timeouts: a stalled peer frees its slot, extra associations are refused."""

from __future__ import annotations

import socket
from typing import Any

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from nodeproc import Node
from peers import echoscu, wait_until


def _assoc(port: int) -> Any:
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="SPINENODE")


def test_more_associations_than_allowed_are_refused(node_factory: Any) -> None:
    node: Node = node_factory(max_associations=2, reserved_associations=0, network_timeout=30)
    held = [_assoc(node.dicom_port) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        third = echoscu("127.0.0.1", node.dicom_port, "SPINENODE")
        assert third.returncode != 0
        assert "Rejected" in third.stdout + third.stderr or "reject" in (third.stdout + third.stderr).lower()
    finally:
        for a in held:
            a.release()
    wait_until(lambda: echoscu("127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0, 15,
               what="a free association slot after release")


def test_stalled_connection_and_idle_association_free_their_slot(node_factory: Any) -> None:
    node: Node = node_factory(max_associations=1, acse_timeout=1.5, network_timeout=2)
    # a peer that connects and never sends an A-ASSOCIATE-RQ
    stalled = socket.create_connection(("127.0.0.1", node.dicom_port))
    try:
        # wait_until fails the test if the ACSE timeout does not free the slot
        wait_until(lambda: echoscu("127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0, 20,
                   interval=0.5, what="the stalled connection to time out")
        # the node closed the stalled socket
        stalled.settimeout(5)
        assert stalled.recv(1024) == b""
    finally:
        stalled.close()
    # an association that is established and then goes quiet
    idle = _assoc(node.dicom_port)
    assert idle.is_established
    wait_until(lambda: echoscu("127.0.0.1", node.dicom_port, "SPINENODE").returncode == 0, 20,
               interval=0.5, what="the idle association to time out")
    wait_until(lambda: not idle.is_established, 10, what="the idle association to be closed by the node")
    assert node.alive()
