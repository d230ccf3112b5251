"""The DICOM receiver: a pynetdicom AE with Verification and every Storage SOP class.

Handlers are bound with their dependencies, return named DIMSE status codes and
never raise. An instance is acknowledged (0x0000) only after its bytes are on
disk and its row is committed.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock
from typing import Any, ClassVar, Protocol

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from spinenode.core.logs import log_failure
from spinenode.core import pynetdicom_tuning
from spinenode.core import status
from scp_node.counters import ReceiverCounters
from scp_node.dicomio import parse_header, parse_header_file
from spinenode.core.errors import (
    DatabaseError,
    InvalidDatasetError,
    InvalidUIDError,
    SOPClassMismatchError,
    StorageError,
)
from scp_node.ingest import Ingestor
from scp_node.scp_pool import ScpPool
from spinenode.core.settings import Settings
from spinenode.core.tls import server_context
from scp_node.slots import AssociationSlots

log = logging.getLogger(__name__)

#: Admission check run when an association is requested (e.g. the disk watermark).
Admission = Callable[[], str | None]


@dataclass
class ScpCounters:
    """In-process counters (the admin metrics read them); a :class:`ReceiverCounters`."""

    shared_across_processes: ClassVar[bool] = False
    lock: Lock = field(default_factory=Lock)
    instances: int = 0
    bytes: int = 0
    failures: dict[int, int] = field(default_factory=dict)
    associations: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    own_results: int = 0

    def stored(self, nbytes: int) -> None:
        with self.lock:
            self.instances += 1
            self.bytes += nbytes

    def failed(self, code: int) -> None:
        with self.lock:
            self.failures[code] = self.failures.get(code, 0) + 1

    def own_result(self) -> None:
        with self.lock:
            self.own_results += 1

    def reject(self, reason: str) -> None:
        with self.lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1


def handle_store(event: Any, ingestor: Ingestor, counters: ScpCounters) -> int:
    """C-STORE: persist, then acknowledge. Returns a DIMSE status; never raises.

    The data set arrives in a file under ``DATA_DIR/receiving`` (written by pynetdicom
    as the PDUs come in, :mod:`spinenode.core.pynetdicom_tuning`), is parsed up to the pixel
    data and renamed into the spool; it is never held in memory as a whole.
    """
    request = event.request
    sop_uid = str(getattr(request, "AffectedSOPInstanceUID", "") or "?")
    calling = _calling_ae(event)
    expected_class = str(request.AffectedSOPClassUID or "") or None
    expected_instance = str(request.AffectedSOPInstanceUID or "") or None
    try:
        received = _received_file(event)
        if received is None:  # stock pynetdicom (tuning not in effect): bytes in memory
            data = event.encoded_dataset(include_meta=True)
            meta = parse_header(data, expected_sop_class=expected_class,
                                expected_sop_instance=expected_instance)
        else:
            if pynetdicom_tuning.overflowed(event):
                raise StorageError("bytes in flight over MAX_INFLIGHT_MB: data set not kept")
            meta = parse_header_file(received, expected_sop_class=expected_class,
                                     expected_sop_instance=expected_instance)
        if meta.is_own_result:
            # Our own SR/SEG/key image routed back by the PACS: storing it would reopen
            # the study, analyse it again and send a new SR, which would come back too.
            # We keep the original; the PACS gets success so it does not retry.
            counters.own_result()
            log.info("C-STORE of %s (study %s) from %s: the node's own result came back; acknowledged, "
                     "not stored, study not reopened", meta.sop_instance_uid, meta.study_uid, calling)
            return status.SUCCESS
        if received is None:
            ingestor.store(meta, data, calling)
            size = len(data)
        else:
            size = ingestor.store_file(meta, received, calling)
    except (InvalidDatasetError, InvalidUIDError) as exc:
        return _fail(counters, status.CANNOT_UNDERSTAND, sop_uid, calling, exc)
    except SOPClassMismatchError as exc:
        return _fail(counters, status.DATASET_DOES_NOT_MATCH_SOP_CLASS, sop_uid, calling, exc)
    except (StorageError, DatabaseError) as exc:
        return _fail(counters, status.OUT_OF_RESOURCES, sop_uid, calling, exc)
    except Exception as exc:  # a handler must never raise: map the unknown to a refusal
        log_failure(log, "unexpected error storing %s from %s", _safe(sop_uid), calling, exc=exc)
        return _fail(counters, status.OUT_OF_RESOURCES, sop_uid, calling, exc)
    counters.stored(size)
    log.debug("stored %s from %s", meta.sop_instance_uid, calling)
    return status.SUCCESS


def _received_file(event: Any) -> Path | None:
    """The file pynetdicom received the data set into (STORE_RECV_CHUNKED_DATASET), if any."""
    try:
        return Path(event.dataset_path)
    except (AttributeError, TypeError, ValueError):
        return None


def _fail(counters: ScpCounters, code: int, sop_uid: str, calling: str, exc: BaseException) -> int:
    counters.failed(code)
    # The reason comes from our own exception texts, which never carry patient data.
    log.warning(
        "C-STORE of %s from %s refused 0x%04X %s: %s",
        _safe(sop_uid), calling, code, status.NAMES.get(code, ""), exc,
    )
    return code


def _safe(uid: str) -> str:
    """A UID for the log: only digits and dots, capped, so crafted values can't inject."""
    return "".join(c for c in uid[:64] if c.isdigit() or c == ".") or "?"


def _calling_ae(event: Any) -> str:
    try:
        return str(event.assoc.requestor.ae_title).strip()
    except AttributeError:
        return "?"


def handle_echo(event: Any) -> int:
    return status.SUCCESS


def handle_conn_close(event: Any, slots: AssociationSlots) -> None:
    """Free the association's slot; delete the file of a transfer cut off midway."""
    slots.release(event.assoc)
    if pynetdicom_tuning.discard_partials(event.assoc):
        log.info("connection from %s closed during a transfer: partial data set removed", _address(event))


def _address(event: Any) -> str:
    try:
        return str(event.assoc.requestor.address)
    except AttributeError:
        return "?"


def handle_conn_open(event: Any, guard: pynetdicom_tuning.ReceiveGuard) -> None:
    """Guard the AE (PDU limit, receiving files; once per AE) and disable Nagle on the
    accepted socket: one delayed ACK per C-STORE otherwise."""
    pynetdicom_tuning.guard_ae(event.assoc.ae, guard)
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
REJECT_CALLED_AE = (0x01, 0x01, 0x07)  # permanent, service-user, called AE not recognised
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service-user, calling AE not recognised
REJECT_BUSY = (0x02, 0x03, 0x01)  # transient, service-provider (presentation), congestion
REJECT_LIMIT = (0x02, 0x03, 0x02)  # transient, service-provider (presentation), local limit exceeded


def association_refusal(
    called: str, calling: str, settings: Settings, admission: Admission | None
) -> tuple[str, tuple[int, int, int]] | None:
    """Why an association request must be refused, or None to go on negotiating."""
    if called.strip() != settings.ae_title:
        return "called_ae", REJECT_CALLED_AE
    if settings.allowed_calling_aes and calling.strip() not in settings.allowed_calling_aes:
        return "calling_ae", REJECT_CALLING_AE
    reason = admission() if admission else None
    if reason:
        return reason, REJECT_BUSY
    return None


def handle_requested(
    event: Any, settings: Settings, counters: ScpCounters, admission: Admission | None,
    slots: AssociationSlots,
) -> None:
    """Association request: refuse with A-ASSOCIATE-RJ and a logged reason, or take a slot."""
    primitive = event.assoc.requestor.primitive
    called = str(getattr(primitive, "called_ae_title", "") or "")
    calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
    address = _address(event)
    refusal = association_refusal(called, calling, settings, admission)
    if refusal is None:
        reason = slots.admit(event.assoc, address)
        if reason is None:
            return
        refusal = reason, REJECT_LIMIT
    reason, (result, source, diagnostic) = refusal
    counters.reject(reason)
    log.warning("association from %s at %s to %r refused: %s", calling, address, called.strip(), reason)
    event.assoc.acse.send_reject(result, source, diagnostic)
    _wait_until_sent(event.assoc)


#: The longest a refusal waits for its A-ASSOCIATE-RJ to leave (seconds).
REJECT_SEND_WAIT = 2.0


def _wait_until_sent(assoc: Any) -> None:
    """Wait until the DUL has written the A-ASSOCIATE-RJ: pynetdicom closes the socket
    as soon as this handler returns, and a close that overtakes the queued PDU leaves
    the caller with an abort instead of the reason (seen with ``spinenode echo``)."""
    deadline = time.monotonic() + REJECT_SEND_WAIT
    machine = assoc.dul.state_machine
    while machine.current_state not in ("Sta13", "Sta1") and time.monotonic() < deadline:
        time.sleep(0.002)


def pdu_refused(counters: ReceiverCounters) -> Callable[[Any, str, str], None]:
    """The callback :mod:`spinenode.core.pynetdicom_tuning` calls when it aborts an association."""

    def refused(assoc: Any, reason: str, detail: str) -> None:
        counters.reject(reason)
        try:
            address, calling = str(assoc.requestor.address), str(assoc.requestor.ae_title).strip()
        except AttributeError:
            address, calling = "?", "?"
        log.warning("association from %s at %s aborted: %s (%s)", calling, address, reason, detail)

    return refused


def handle_accepted(event: Any, counters: ScpCounters) -> None:
    with counters.lock:
        counters.associations += 1
    log.info("association accepted from %s", _calling_ae(event))


#: Storage SOP classes whose presentation contexts the node rejects: pynetdicom's
#: Non-Patient Object Storage classes (no patient, study or series to index them under)
#: and DICOMDIR. Every other storage class, listed by pynetdicom or not (private,
#: retired, newer than pynetdicom), is accepted. README, "What the receiver accepts".
NOT_ACCEPTED_SOP_CLASSES: frozenset[str] = frozenset({
    "1.2.840.10008.5.1.4.38.1",  # Hanging Protocol Storage
    "1.2.840.10008.5.1.4.39.1",  # Color Palette Storage
    "1.2.840.10008.5.1.4.43.1",  # Generic Implant Template Storage
    "1.2.840.10008.5.1.4.44.1",  # Implant Assembly Template Storage
    "1.2.840.10008.5.1.4.45.1",  # Implant Template Group Storage
    "1.2.840.10008.5.1.4.1.1.200.1",  # CT Defined Procedure Protocol Storage
    "1.2.840.10008.5.1.4.1.1.200.3",  # Protocol Approval Storage
    "1.2.840.10008.5.1.4.1.1.200.7",  # XA Defined Procedure Protocol Storage
    "1.2.840.10008.5.1.4.1.1.201.1",  # Inventory Storage
    "1.2.840.10008.1.3.10",  # Media Storage Directory Storage (DICOMDIR)
})


def build_ae(settings: Settings) -> AE:
    """The node's AE with every storage context and every transfer syntax."""
    # Accept Storage SOP classes pynetdicom does not list (private, retired, new).
    pynetdicom_config.UNRESTRICTED_STORAGE_SERVICE = True
    ae = AE(ae_title=settings.ae_title)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for ctx in AllStoragePresentationContexts:
        assert ctx.abstract_syntax is not None
        if ctx.abstract_syntax not in NOT_ACCEPTED_SOP_CLASSES:
            ae.add_supported_context(ctx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.require_called_aet = True
    if settings.allowed_calling_aes:
        ae.require_calling_aet = list(settings.allowed_calling_aes)
    else:
        log.warning("ALLOWED_CALLING_AES is empty: any calling AE title is accepted")
    # The node's own slot rules (scp_node.slots) refuse, log and count; pynetdicom's
    # limit, which counts connections not yet negotiated and refuses silently, only backs them up.
    ae.maximum_associations = settings.max_associations + 64
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.maximum_pdu_size = settings.max_pdu
    return ae


def receive_guard(settings: Settings, counters: ReceiverCounters) -> pynetdicom_tuning.ReceiveGuard:
    """PDU length limit, receiving directory and in-flight cap (see pynetdicom_tuning)."""
    receiving = settings.data_dir / "receiving"
    receiving.mkdir(parents=True, exist_ok=True)
    return pynetdicom_tuning.ReceiveGuard(
        max_pdu=settings.max_pdu,
        on_refused=pdu_refused(counters),
        receive_dir=receiving,
        inflight=pynetdicom_tuning.InFlight(int(settings.max_inflight_mb * 1024 * 1024)),
    )


def scp_handlers(
    settings: Settings,
    ingestor: Ingestor,
    counters: ScpCounters,
    admission: Admission | None = None,
) -> list[Any]:
    """The event handlers of the receiver, bound to their dependencies."""
    slots = AssociationSlots(settings.max_associations, settings.max_associations_per_address,
                             settings.reserved_associations)
    return [
        (evt.EVT_C_STORE, handle_store, [ingestor, counters]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_CONN_OPEN, handle_conn_open, [receive_guard(settings, counters)]),
        (evt.EVT_CONN_CLOSE, handle_conn_close, [slots]),
        (evt.EVT_REQUESTED, handle_requested, [settings, counters, admission, slots]),
        (evt.EVT_ACCEPTED, handle_accepted, [counters]),
    ]


def make_server(
    settings: Settings,
    ingestor: Ingestor,
    counters: ReceiverCounters | None,
    admission: Admission | None,
    server_class: type[ThreadedAssociationServer],
) -> ThreadedAssociationServer:
    """The receiver's pynetdicom server, not started, of ``server_class`` (what a worker
    process of :mod:`scp_node.scp_pool` runs; ``counters`` None: its own)."""
    pynetdicom_tuning.apply()
    ae = build_ae(settings)
    return ae.make_server(
        (settings.dicom_host, settings.dicom_port),
        ae_title=settings.ae_title,
        contexts=ae.supported_contexts,
        evt_handlers=scp_handlers(settings, ingestor, counters if counters is not None else ScpCounters(),
                                  admission),
        server_class=server_class,
    )


class ScpServer(Protocol):
    """What :func:`start_scp` returns: a running receiver that can be stopped."""

    server_address: Any

    def shutdown(self) -> None: ...


def start_scp(
    settings: Settings,
    ingestor: Ingestor,
    counters: ReceiverCounters,
    admission: Admission | None = None,
) -> ScpServer:
    """Start listening (non-blocking) and return the server; call ``shutdown()`` to stop.

    With ``SCP_PROCESSES`` = 1 the associations run as threads of this process, with
    ``ingestor``. With N > 1 this process only accepts connections and hands each to
    one of N worker processes (:mod:`scp_node.scp_pool`) that run the same handlers
    with their own database engine; ``ingestor`` and ``counters`` are then unused
    and ``admission``, if given, must be picklable.
    """
    if settings.scp_processes > 1:
        return ScpPool(settings, settings.scp_processes, make_server, admission,
                       counters if counters.shared_across_processes else None).start()
    pynetdicom_tuning.apply()
    ae = build_ae(settings)
    server = ae.start_server(
        (settings.dicom_host, settings.dicom_port),
        block=False,
        evt_handlers=scp_handlers(settings, ingestor, counters, admission),
    )
    assert isinstance(server, ThreadedAssociationServer)
    log.info(
        "DICOM receiver %s listening on %s:%d", settings.ae_title, *server.server_address[:2]
    )
    return server


def start_tls_scp(settings: Settings, ingestor: Any, counters: Any, admission: Any = None) -> Any:
    """A second receiver on DICOM_TLS_PORT: same AE, same handlers, TLS transport.

    Runs as threads of the node process (the TLS listener is for sites that need
    encryption on the wire, typically at lower volume than the plain port).
    """
    ae = build_ae(settings)
    server = ae.start_server(
        (settings.dicom_host, settings.dicom_tls_port),
        block=False,
        evt_handlers=scp_handlers(settings, ingestor, counters, admission),
        ssl_context=server_context(settings),
    )
    log.info("DICOM TLS receiver %s listening on %s:%d", settings.ae_title, *server.server_address[:2])
    return server
