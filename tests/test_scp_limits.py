"""Hostile network input against a running node (issue 16): oversize PDUs, large data
sets, idle floods. Memory is measured as the receiver process's peak RSS (VmHWM), a
bound, never as time."""

from __future__ import annotations

import hashlib
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from nodeproc import Node
from peers import wait_until
from rawscu import raw_association, read_pdu, send_raw, write_raw
from spinenode.core import pynetdicom_tuning
from spinenode.core import status

MiB = 1024 * 1024


def _peak_rss(pid: int) -> int:
    """Peak resident set size (VmHWM) of ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _metric(node: Node, name: str) -> float:
    text = httpx.get(node.url("/metrics"), timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_pynetdicom_is_the_version_the_tuning_was_checked_on() -> None:
    """Fails when pynetdicom changes underneath spinenode/core/pynetdicom_tuning.py: re-check
    the patched functions, then update CHECKED_VERSIONS and CHECKED_SOURCES."""
    import pynetdicom

    assert pynetdicom.__version__.startswith(pynetdicom_tuning.CHECKED_VERSIONS), pynetdicom.__version__
    assert pynetdicom_tuning.internals_match() == []
    # apply() takes effect (in a fresh interpreter: it patches pynetdicom process-wide)
    code = ("import logging, sys; logging.basicConfig(); from spinenode.core import pynetdicom_tuning as t; "
            "sys.exit(0 if t.apply() else 1)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_a_requestor_pausing_the_reactor_sees_it_running_until_it_parks() -> None:
    """pynetdicom's reactor marks itself paused before it waits on its checkpoint and running
    only after the wait returned. A ``send_*`` that clears the checkpoint in between read
    "paused", sent its request, and the reactor took the response (seen under load in
    tests/test_fuzz_cstore.py: "Received unexpected C-ECHO service message", then a wait
    until the peer's network timeout). The interleaving is forced here, on pynetdicom's
    plain Event and on the node's checkpoint."""
    import threading

    from spinenode.core.pynetdicom_tuning import _ReactorCheckpoint

    class Assoc:
        network_timeout_response = "A-ABORT"
        _is_paused = False

    def paused_as_seen_by_send(make: Any) -> bool:
        assoc = Assoc()
        checkpoint = make(assoc)
        checkpoint.set()  # the previous send_* let the reactor go
        returned, read = threading.Event(), threading.Event()

        def reactor() -> None:  # Association._run_reactor, the three lines of its pause
            assoc._is_paused = True
            checkpoint.wait()
            returned.set()
            read.wait(10)  # preempted here, before it marks itself running
            assoc._is_paused = False

        thread = threading.Thread(target=reactor)
        thread.start()
        assert returned.wait(10)
        checkpoint.clear()  # the next send_*: pause the reactor ...
        seen = assoc._is_paused  # ... and go on once it reads "paused"
        read.set()
        thread.join(10)
        return seen

    assert paused_as_seen_by_send(lambda assoc: threading.Event()) is True  # pynetdicom's race
    assert paused_as_seen_by_send(_ReactorCheckpoint) is False  # waits for the reactor to park

    def runs_on_after_set_then_clear(make: Any) -> bool:
        """The previous send_* sets the checkpoint and the next clears it before the
        parked reactor got the lock back: does the reactor run on?"""
        checkpoint = make(Assoc())
        checkpoint.clear()
        parked, returned = threading.Event(), threading.Event()

        def reactor() -> None:
            parked.set()
            checkpoint.wait()
            returned.set()

        thread = threading.Thread(target=reactor, daemon=True)
        thread.start()
        assert parked.wait(10)
        while not checkpoint._cond._waiters:  # type: ignore[attr-defined]  # inside Condition.wait
            returned.wait(0.01)
        with checkpoint._cond:  # type: ignore[attr-defined]  # set() then clear(), the waiter locked out
            checkpoint._flag = True  # type: ignore[attr-defined]
            checkpoint._cond.notify_all()  # type: ignore[attr-defined]
            checkpoint._flag = False  # type: ignore[attr-defined]
        # pynetdicom's Event returns at once; the node's must not return at all (1 s is plenty to see it)
        ran_on = returned.wait(1 if isinstance(checkpoint, _ReactorCheckpoint) else 10)
        checkpoint.set()
        assert returned.wait(10)
        thread.join(10)
        return ran_on

    assert runs_on_after_set_then_clear(lambda assoc: threading.Event()) is True  # pynetdicom's race
    assert runs_on_after_set_then_clear(_ReactorCheckpoint) is False  # stays parked

    # installed, every new association gets the checkpoint (in a fresh interpreter)
    code = ("import sys; from spinenode.core import pynetdicom_tuning as t; from pynetdicom import AE; "
            "from pynetdicom.association import Association; ok = t.fix_requestor_pause(); "
            "a = Association(AE(), 'requestor'); "
            "sys.exit(0 if ok and isinstance(a._reactor_checkpoint, t._ReactorCheckpoint) "
            "and a._reactor_checkpoint.is_set() else 1)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_changed_internals_fall_back_to_stock_with_a_warning(caplog: Any) -> None:
    code = ("import logging, sys; logging.basicConfig(); from spinenode.core import pynetdicom_tuning as t; "
            "t.CHECKED_SOURCES['dul.DULServiceProvider.run_reactor'] = '0' * 16; "
            "from pynetdicom import dul; before = dul.DULServiceProvider._read_pdu_data; "
            "from pynetdicom.association import Association; init = Association.__init__; "
            "ok = t.apply(); fixed = t.fix_requestor_pause() or t.fix_requestor_pause(); "
            "sys.exit(0 if not ok and not fixed and dul.DULServiceProvider._read_pdu_data is before "
            "and Association.__init__ is init else 1)")
    r = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "internals differ" in r.stderr and "run_reactor" in r.stderr
    assert r.stderr.count("requestor pause race stays") == 1  # said once, not on every export


def test_oversize_pdu_is_aborted_unread_and_counted(node_factory: Any) -> None:
    node: Node = node_factory()
    assert node.proc is not None
    sock = raw_association(node.dicom_port)
    before = _peak_rss(node.proc.pid)
    declared = 600 * MiB
    sent = 0
    chunk = b"\x00" * MiB
    try:
        sock.sendall(struct.pack(">BBL", 0x04, 0, declared))
        while sent < declared:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the node closed the connection: expected
    # the node answered with an A-ABORT (or closed at once), and never read the body
    try:
        pdu_type, _ = read_pdu(sock)
    except OSError:
        pdu_type = 0
    sock.close()
    assert pdu_type in (0x07, 0), f"PDU type 0x{pdu_type:02X}"
    assert sent < 64 * MiB, f"the node kept reading: {sent // MiB} MiB accepted"
    grown = _peak_rss(node.proc.pid) - before
    print(f"oversize PDU: {sent // MiB} MiB accepted, peak RSS {before // MiB} -> +{grown / MiB:.1f} MiB")
    assert grown < 64 * MiB, f"peak RSS grew by {grown // MiB} MiB"
    wait_until(lambda: _metric(node, 'spinenode_associations_rejected_total{reason="pdu_too_large"}') == 1.0,
               10, what="the refusal in /metrics")
    assert "aborted: pdu_too_large (PDU type 0x04 declares 629145600 bytes, limit 131072)" in node.log()
    # still serving
    ae = AE(ae_title="AFTER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="SPINENODE")
    assert assoc.is_established
    assert int(assoc.send_c_echo().Status) == status.SUCCESS
    assoc.release()


def _large_mr(path: Path, frames: int) -> Path:
    """An MR instance with ``frames`` frames of 1024x1024x16 bit, written in pieces."""
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = 1024
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    from pydicom.filebase import DicomBytesIO

    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, ds)
    length = frames * 1024 * 1024 * 2
    body = buf.getvalue() + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, length)
    write_raw(path, MRImageStorage, str(ds.SOPInstanceUID), ExplicitVRLittleEndian, body)
    with path.open("ab") as fh:
        block = bytes(range(256)) * 4096
        for _ in range(length // len(block)):
            fh.write(block)
    return path


def _dataset_sha256(path: Path) -> str:
    """SHA-256 of the data set (after the file meta, which the receiver writes itself)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    h = hashlib.sha256()
    with path.open("rb") as fh:
        read_preamble(fh, False)
        _read_file_meta_info(fh)
        while chunk := fh.read(MiB):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.timeout(600)
def test_large_cstore_is_received_to_disk_with_bounded_memory(node_factory: Any, tmp_path: Path) -> None:
    node: Node = node_factory(stable_seconds=3600)
    assert node.proc is not None
    small = _large_mr(tmp_path / "small.dcm", 1)
    assert send_raw(node.dicom_port, [small], [(MRImageStorage, ExplicitVRLittleEndian)]) == [0, 0]
    before = _peak_rss(node.proc.pid)
    big = _large_mr(tmp_path / "big.dcm", 150)  # 300 MiB of pixel data
    statuses = send_raw(node.dicom_port, [big], [(MRImageStorage, ExplicitVRLittleEndian)])
    assert statuses == [status.SUCCESS, status.SUCCESS]
    grown = _peak_rss(node.proc.pid) - before
    print(f"300 MiB C-STORE: peak RSS {before // MiB} -> +{grown / MiB:.1f} MiB")
    assert grown < 64 * MiB, f"peak RSS grew by {grown // MiB} MiB for a {big.stat().st_size // MiB} MiB instance"
    stored = [p for p in (node.data_dir / "incoming").rglob("*.dcm") if p.stat().st_size > 100 * MiB]
    assert len(stored) == 1 and _dataset_sha256(stored[0]) == _dataset_sha256(big)
    assert not any((node.data_dir / "receiving").iterdir())


def test_inflight_cap_refuses_with_out_of_resources(node_factory: Any, tmp_path: Path) -> None:
    node: Node = node_factory(stable_seconds=3600, max_inflight_mb=8)
    big = _large_mr(tmp_path / "big.dcm", 8)  # 16 MiB
    small = _large_mr(tmp_path / "small.dcm", 1)
    statuses = send_raw(node.dicom_port, [big, small], [(MRImageStorage, ExplicitVRLittleEndian)])
    assert statuses == [status.OUT_OF_RESOURCES, status.SUCCESS, status.SUCCESS]
    assert "bytes in flight over MAX_INFLIGHT_MB" in node.log()
    assert not any((node.data_dir / "receiving").iterdir())
    assert len(list((node.data_dir / "incoming").rglob("*.dcm"))) == 1


def _hold(port: int, source: str, n: int) -> list[Any]:
    ae = AE(ae_title="FLOOD")
    ae.add_requested_context(Verification)
    ae.acse_timeout = 30
    return [ae.associate("127.0.0.1", port, ae_title="SPINENODE", bind_address=(source, 0)) for _ in range(n)]


def _echo_from(port: int, source: str) -> int:
    ae = AE(ae_title="OTHER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="SPINENODE", bind_address=(source, 0))
    if not assoc.is_established:
        return -1
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def _cpu_seconds(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(300)
def test_idle_flood_from_one_address_does_not_lock_out_others(node_factory: Any) -> None:
    # defaults: 16 slots, 8 per address, the last 4 for addresses holding none
    node: Node = node_factory(network_timeout=60)
    assert node.proc is not None
    flood = _hold(node.dicom_port, "127.0.0.1", 50)
    third: list[Any] = []
    try:
        assert sum(a.is_established for a in flood) == 8
        # a second address takes slots until only the reserved ones are left
        third = _hold(node.dicom_port, "127.0.0.3", 6)
        assert sum(a.is_established for a in third) == 4
        # a third address still gets in
        assert _echo_from(node.dicom_port, "127.0.0.2") == status.SUCCESS
        # 12 idle associations cost next to no CPU (tuned polling slept 200 us each)
        t0 = _cpu_seconds(node.proc.pid)
        threading.Event().wait(3.0)
        idle_cpu = _cpu_seconds(node.proc.pid) - t0
        print(f"node CPU with 12 idle associations: {idle_cpu:.2f} s in 3 s")
        assert idle_cpu < 0.6, f"{idle_cpu:.2f} s of CPU in 3 s with 12 idle associations"
    finally:
        for a in flood + third:
            if a.is_established:
                a.release()
    assert _metric(node, 'spinenode_associations_rejected_total{reason="per_address"}') == 42.0
    assert _metric(node, 'spinenode_associations_rejected_total{reason="reserved"}') == 2.0
    log = node.log()
    assert log.count("at 127.0.0.1 to 'SPINENODE' refused: per_address") == 42
    assert log.count("at 127.0.0.3 to 'SPINENODE' refused: reserved") == 2


def test_raw_socket_flood_without_requests_times_out(node_factory: Any) -> None:
    """Connections that never send an A-ASSOCIATE-RQ hold no association slot and are
    closed after ACSE_TIMEOUT."""
    node: Node = node_factory(acse_timeout=2)
    socks = [socket.create_connection(("127.0.0.1", node.dicom_port)) for _ in range(20)]
    try:
        assert _echo_from(node.dicom_port, "127.0.0.2") == status.SUCCESS
        for s in socks:
            s.settimeout(20)
            assert s.recv(16) == b""
    finally:
        for s in socks:
            s.close()
