"""C-ECHO and C-STORE SCU helpers for admins (``spinenode echo`` / ``spinenode send``)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from scp_node.errors import DicomNetworkError
from scp_node.settings import Destination

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SendReport:
    sent: int
    failed: int
    statuses: tuple[tuple[str, int], ...]


def _nodelay(event: object) -> None:
    sock = getattr(getattr(getattr(event, "assoc").dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def echo(dest: Destination, *, calling_ae: str = "SPINENODE", timeout: float = 10.0) -> int:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
    if not assoc.is_established:
        raise DicomNetworkError(f"association with {dest} not established")
    try:
        rsp = assoc.send_c_echo()
        if not rsp or "Status" not in rsp:
            raise DicomNetworkError(f"no C-ECHO response from {dest}")
        return int(rsp.Status)
    finally:
        assoc.release()


def iter_dicom_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            yield p


def send_files(
    dest: Destination, path: Path | Iterable[Path], *, calling_ae: str = "SPINENODE", timeout: float = 30.0
) -> SendReport:
    """C-STORE every DICOM file under ``path`` in one association."""
    files = list(iter_dicom_files(path)) if isinstance(path, Path) else list(path)
    headers = []
    for f in files:
        try:
            ds = dcmread(f, stop_before_pixels=True)
            headers.append((f, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
        except Exception as exc:
            log.warning("skipping %s: not a readable DICOM file (%s)", f.name, type(exc).__name__)
    if not headers:
        raise DicomNetworkError(f"no DICOM files under {path}")
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    contexts = sorted({(c, t) for _, c, t in headers})
    if len(contexts) > 128:
        raise DicomNetworkError("more than 128 SOP class / transfer syntax combinations")
    for sop_class, tsyntax in contexts:
        ae.add_requested_context(sop_class, [tsyntax])
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
    if not assoc.is_established:
        raise DicomNetworkError(f"association with {dest} not established")
    statuses: list[tuple[str, int]] = []
    try:
        for f, _, _ in headers:
            ds = dcmread(f)
            rsp = assoc.send_c_store(ds)
            code = int(rsp.Status) if rsp and "Status" in rsp else -1
            statuses.append((f.name, code))
    finally:
        if assoc.is_established:
            assoc.release()
    failed = sum(1 for _, c in statuses if c not in (0x0000, 0xB000, 0xB007, 0xB006))
    return SendReport(len(statuses) - failed, failed + len(files) - len(headers), tuple(statuses))
