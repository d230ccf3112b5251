"""DIMSE C-STORE export (``AE@HOST:PORT[;tls][;ts=...]``): one association per call."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Sequence

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from spinenode.core import pynetdicom_tuning, status
from spinenode.core.settings import Destination, Settings
from workers.exporters.base import ObjectToSend, SendOutcome

log = logging.getLogger(__name__)

#: The transfer syntaxes export proposes, in order of preference. pynetdicom's default
#: list adds Deflated and Explicit Big Endian, and a peer that accepts everything
#: (DCMTK ``storescp +xa``) then picks Deflated, which many archives and ``dciodvfy``
#: cannot read. The result objects are written in Explicit VR Little Endian, and
#: pynetdicom re-encodes them to Implicit for a peer that accepts only that. A
#: destination's ``;ts=`` option replaces this list for that destination (settings).
PROPOSED_TRANSFER_SYNTAXES: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

#: Warning statuses that still mean "stored" (PS3.4 B.2.3).
STORED_WITH_WARNING = frozenset({0xB000, 0xB006, 0xB007})


def _nodelay(event: object) -> None:
    sock = getattr(getattr(getattr(event, "assoc").dul, "socket", None), "socket", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def classify_status(code: int) -> tuple[bool, bool]:
    """(stored, transient) for a C-STORE response status."""
    if code == status.SUCCESS or code in STORED_WITH_WARNING:
        return True, False
    if status.is_transient(code):
        return False, True
    return False, False


def send_objects(
    dest: Destination,
    objects: Sequence[ObjectToSend],
    *,
    calling_ae: str,
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> list[SendOutcome]:
    """One association to ``dest`` (over TLS when ``dest.tls``), proposing its transfer
    syntaxes (``;ts=``) or :data:`PROPOSED_TRANSFER_SYNTAXES`; one outcome per object."""
    if not objects:
        return []
    pynetdicom_tuning.fix_requestor_pause()
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class in sorted({o.sop_class_uid for o in objects}):
        ae.add_requested_context(sop_class, list(dest.transfer_syntaxes or PROPOSED_TRANSFER_SYNTAXES))
    if dest.tls and tls is None:
        return [SendOutcome(o.export_id, False, False, None, "destination needs TLS but no TLS context")
                for o in objects]
    try:
        assoc = ae.associate(
            dest.host, dest.port, ae_title=dest.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)],
            tls_args=(tls, dest.host) if dest.tls and tls is not None else None,
        )
    except (OSError, RuntimeError) as exc:
        return [SendOutcome(o.export_id, False, True, None, f"network error: {exc}") for o in objects]
    if not assoc.is_established:
        why = "association rejected" if assoc.is_rejected else "association aborted or peer unreachable"
        return [SendOutcome(o.export_id, False, True, None, why) for o in objects]
    outcomes: list[SendOutcome] = []
    accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
    try:
        for o in objects:
            if o.sop_class_uid not in accepted:
                outcomes.append(SendOutcome(o.export_id, False, False, None,
                                            f"destination refused the presentation context {o.sop_class_uid}",
                                            context_refused=True))
                continue
            if not assoc.is_established:
                outcomes.append(SendOutcome(o.export_id, False, True, None, "association lost"))
                continue
            try:
                rsp = assoc.send_c_store(dcmread(o.path))
            except FileNotFoundError:  # a retry cannot bring it back
                outcomes.append(SendOutcome(o.export_id, False, False, None,
                                            f"result file {o.path.name} not found on {socket.gethostname()}"))
                continue
            except (OSError, RuntimeError, ValueError) as exc:
                outcomes.append(SendOutcome(o.export_id, False, True, None, f"send failed: {type(exc).__name__}"))
                continue
            if rsp is None or "Status" not in rsp:
                outcomes.append(SendOutcome(o.export_id, False, True, None, "no response (timeout or abort)"))
                continue
            code = int(rsp.Status)
            stored, transient = classify_status(code)
            outcomes.append(SendOutcome(o.export_id, stored, transient, code,
                                        None if stored else f"status 0x{code:04X}"))
    finally:
        if assoc.is_established:
            assoc.release()
    for o, out in zip(objects, outcomes):
        log.info("export %s to %s: %s", o.sop_instance_uid, dest,
                 "stored" if out.ok else f"failed ({out.error})")
    return outcomes



class DimseExporter:
    """C-STORE SCU, one association per call (``AE@HOST:PORT[;tls]``)."""

    def send(self, destination: str, objects: Sequence[ObjectToSend], settings: Settings,
             calling_ae: str) -> list[SendOutcome]:
        target = Destination.parse(destination)
        tls = None
        if target.tls:
            from spinenode.core.tls import client_context

            tls = client_context(settings)
        return send_objects(target, objects, calling_ae=calling_ae, timeout=settings.export_timeout, tls=tls)
