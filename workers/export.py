"""C-STORE of result objects to the configured destinations, with a retry policy.

Transient failures (association refused or aborted, network errors, 0xA7xx) are
retried with exponential backoff and a cap; permanent ones (0xA9xx, 0xCxxx, a
presentation context the destination refuses) fail at once. The attempts, last
status and last error of every (object, destination) pair are in the database.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, evt

from scp_node import status
from scp_node.settings import Destination

log = logging.getLogger(__name__)

#: Warning statuses that still mean "stored" (PS3.4 B.2.3).
STORED_WITH_WARNING = frozenset({0xB000, 0xB006, 0xB007})


@dataclass(frozen=True, slots=True)
class ObjectToSend:
    export_id: int
    path: Path
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class SendOutcome:
    export_id: int
    ok: bool
    transient: bool
    status: int | None
    error: str | None
    #: The destination did not accept a presentation context for this SOP class.
    context_refused: bool = False


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Delay before the next attempt after ``attempts`` failures: base * 2**(n-1), capped."""
    return min(cap, base * (2 ** max(0, attempts - 1)))


def next_attempt(now: dt.datetime, attempts: int, base: float, cap: float) -> dt.datetime:
    return now + dt.timedelta(seconds=backoff_seconds(attempts, base, cap))


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
    """One association to ``dest`` (over TLS when ``dest.tls``); one outcome per object."""
    if not objects:
        return []
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class in sorted({o.sop_class_uid for o in objects}):
        ae.add_requested_context(sop_class)  # Explicit/Implicit VR Little Endian
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
