"""A pynetdicom SCU that sends files byte for byte (chunked), for malformed-input tests."""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification

from spinenode.core import pynetdicom_tuning


def write_raw(path: Path, sop_class: str, sop_instance: str, transfer_syntax: str, body: bytes) -> Path:
    """A Part 10 file whose file meta is valid and whose data set is ``body`` verbatim."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    with path.open("wb") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fh, meta, enforce_standard=True)  # type: ignore[arg-type]
        fh.write(body)
    return path


def send_raw(
    port: int, files: Sequence[Path], contexts: Sequence[tuple[str, str]], called_ae: str = "SPINENODE",
    calling_ae: str = "RAWSCU",
) -> list[int]:
    """C-STORE each file's bytes as they are; returns the status of each (-1: no response)."""
    pynetdicom_tuning.fix_requestor_pause()  # or a response may be lost under load (see there)
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        ae = AE(ae_title=calling_ae)
        ae.add_requested_context(Verification)
        for sop_class, ts in sorted(set(contexts)):
            ae.add_requested_context(sop_class, [ts])
        assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
        assert assoc.is_established, "association refused"
        statuses = []
        try:
            for f in files:
                rsp = assoc.send_c_store(f)
                statuses.append(int(rsp.Status) if rsp is not None and "Status" in rsp else -1)
            echo = assoc.send_c_echo()
            statuses.append(int(echo.Status))
        finally:
            assoc.release()
        return statuses
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous


# --- a DICOM upper layer spoken by hand, for PDUs pynetdicom would never send ---------

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def associate_rq(called_ae: str, calling_ae: str, abstract_syntax: str, transfer_syntax: str,
                 max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) with one presentation context."""
    pc = bytes([1, 0, 0, 0]) + _item(0x30, abstract_syntax.encode()) + _item(0x40, transfer_syntax.encode())
    user = _item(0x51, struct.pack(">L", max_pdu))
    body = (struct.pack(">HH", 1, 0) + called_ae.ljust(16).encode() + calling_ae.ljust(16).encode()
            + b"\x00" * 32 + _item(0x10, APPLICATION_CONTEXT.encode()) + _item(0x20, pc) + _item(0x50, user))
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """One PDU from ``sock``: (type, body); (0, b"") when the peer closed."""
    header = _recv_exactly(sock, 6)
    if len(header) < 6:
        return 0, b""
    pdu_type, _, length = struct.unpack(">BBL", header)
    return pdu_type, _recv_exactly(sock, length)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def raw_association(port: int, called_ae: str = "SPINENODE", calling_ae: str = "RAWSCU",
                    abstract_syntax: str = "1.2.840.10008.1.1",
                    transfer_syntax: str = "1.2.840.10008.1.2", host: str = "127.0.0.1") -> socket.socket:
    """A TCP connection on which the node accepted an association (A-ASSOCIATE-AC read)."""
    sock = socket.create_connection((host, port), timeout=30)
    sock.sendall(associate_rq(called_ae, calling_ae, abstract_syntax, transfer_syntax))
    pdu_type, _ = read_pdu(sock)
    assert pdu_type == 0x02, f"association not accepted (PDU type 0x{pdu_type:02X})"
    return sock
