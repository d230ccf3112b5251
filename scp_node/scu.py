"""C-ECHO and C-STORE SCU helpers for admins (``spinenode echo`` / ``spinenode send``)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, Association, evt
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ
from pynetdicom.sop_class import Verification

from spinenode.core import pynetdicom_tuning
from spinenode.core.errors import DicomNetworkError
from spinenode.core.settings import Destination

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SendReport:
    """What ``send_files`` did: files stored, files refused, files skipped as not DICOM."""

    sent: int
    failed: int
    statuses: tuple[tuple[str, int], ...]
    skipped: tuple[str, ...] = ()


class _Outcome:
    """Why an association was not established, from the PDUs the peer sent.

    Read from the PDU, not from the ACSE primitive: a peer that rejects and then closes
    the connection queues an abort behind the rejection, and pynetdicom reports the abort.
    """

    def __init__(self) -> None:
        self.answer: str | None = None

    def on_pdu_recv(self, event: evt.Event) -> None:
        pdu = event.pdu  # type: ignore[attr-defined]
        if isinstance(pdu, A_ASSOCIATE_RJ):
            kind = "permanently" if pdu.result == 0x01 else "transiently"
            self.answer = f"rejected {kind}: {pdu.reason_str} (source: {pdu.source_str})"
        elif self.answer is None and isinstance(pdu, A_ABORT_RQ):
            self.answer = "aborted by the peer"


def _associate(ae: AE, dest: Destination) -> Association:
    """Open an association or raise :class:`DicomNetworkError` saying why it failed:
    the peer's rejection reason (called AE not recognised, calling AE not allowed, no free
    slot), an abort, or no answer at all."""
    outcome = _Outcome()
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title,
                         evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay), (evt.EVT_PDU_RECV, outcome.on_pdu_recv)])
    if assoc.is_established:
        return assoc
    if outcome.answer is None:
        outcome.answer = ("no answer (nothing listens there, or the connection was closed)"
                          if not assoc.is_rejected else "rejected")
    raise DicomNetworkError(f"association with {dest} not established: {outcome.answer}")


def _nodelay(event: object) -> None:
    sock = getattr(getattr(getattr(event, "assoc").dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def echo(dest: Destination, *, calling_ae: str = "SPINENODE", timeout: float = 10.0) -> int:
    pynetdicom_tuning.fix_requestor_pause()
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = _associate(ae, dest)
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


#: How often ``send_files`` associates again after losing an association mid-way.
MAX_RECONNECTS = 3


def _store_until_lost(assoc: Association, pending: list[Path], statuses: list[tuple[str, int]]) -> None:
    """C-STORE the files in ``pending`` in order, moving each one that got a response from
    ``pending`` to ``statuses``; stop when the association is lost (no response within the
    DIMSE timeout makes pynetdicom abort it, seen under load with stock pynetdicom 3.0.4)."""
    while pending and assoc.is_established:
        ds = dcmread(pending[0])
        try:
            rsp = assoc.send_c_store(ds)
        except RuntimeError:  # lost between the check and the send
            return
        if not rsp or "Status" not in rsp:
            return
        statuses.append((pending.pop(0).name, int(rsp.Status)))


def send_files(
    dest: Destination, path: Path | Iterable[Path], *, calling_ae: str = "SPINENODE", timeout: float = 30.0
) -> SendReport:
    """C-STORE every DICOM file under ``path`` in one association (associated again, at most
    :data:`MAX_RECONNECTS` times, when it is lost mid-way).

    Files that are not DICOM (the CSV side files of ``spinenode phantom``, a README) are
    skipped and listed in the report's ``skipped``; they are not failures.
    """
    files = list(iter_dicom_files(path)) if isinstance(path, Path) else list(path)
    headers = []
    skipped: list[str] = []
    for f in files:
        try:
            ds = dcmread(f, stop_before_pixels=True)
            headers.append((f, str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
        except Exception as exc:
            log.info("skipping %s: not a readable DICOM file (%s)", f.name, type(exc).__name__)
            skipped.append(f.name)
    if not headers:
        raise DicomNetworkError(f"no DICOM files under {path}")
    pynetdicom_tuning.fix_requestor_pause()
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    contexts = sorted({(c, t) for _, c, t in headers})
    if len(contexts) > 128:
        raise DicomNetworkError("more than 128 SOP class / transfer syntax combinations")
    for sop_class, tsyntax in contexts:
        ae.add_requested_context(sop_class, [tsyntax])
    statuses: list[tuple[str, int]] = []
    pending = [f for f, _, _ in headers]
    reconnects = 0
    while pending:
        assoc = _associate(ae, dest)
        try:
            _store_until_lost(assoc, pending, statuses)
        finally:
            if assoc.is_established:
                assoc.release()
        if pending:
            # C-STORE is idempotent: the file whose response never came is sent again.
            reconnects += 1
            if reconnects > MAX_RECONNECTS:
                raise DicomNetworkError(
                    f"association with {dest} lost {reconnects} times; {len(statuses)} of {len(headers)} "
                    f"files stored, the last without a response within {timeout:g} s or aborted by the peer")
            log.warning("association with %s lost after %d of %d files; associating again (%d of %d)",
                        dest, len(statuses), len(headers), reconnects, MAX_RECONNECTS)
    failed = sum(1 for _, c in statuses if c not in (0x0000, 0xB000, 0xB007, 0xB006))
    return SendReport(len(statuses) - failed, failed, tuple(statuses), tuple(skipped))
