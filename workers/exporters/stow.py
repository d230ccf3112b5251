"""DICOMweb STOW-RS export (``dicomweb+http(s)://HOST:PORT/PATH``): one request per call."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Sequence

from spinenode.core import status
from spinenode.core.settings import Settings
from workers.exporters.base import ObjectToSend, SendOutcome

log = logging.getLogger(__name__)


class StowExporter:
    """DICOMweb STOW-RS, one request per call (``dicomweb+http(s)://HOST:PORT/PATH``)."""

    def send(self, destination: str, objects: Sequence[ObjectToSend], settings: Settings,
             calling_ae: str) -> list[SendOutcome]:
        from workers.dicomweb import DicomWebClient, DicomWebError

        if not objects:
            return []
        url = destination.removeprefix("dicomweb+")
        verify: ssl.SSLContext | bool = True
        if url.startswith("https://") and settings.tls_ca:
            verify = ssl.create_default_context(cafile=str(settings.tls_ca))
        missing = [o for o in objects if not o.path.is_file()]
        present = [o for o in objects if o.path.is_file()]
        outcomes = {o.export_id: SendOutcome(o.export_id, False, False, None,
                                             f"result file {o.path.name} not found on {socket.gethostname()}")
                    for o in missing}
        try:
            with DicomWebClient(url, timeout=settings.export_timeout, verify=verify) as client:
                stored = client.store([o.path for o in present]) if present else []
        except DicomWebError as exc:
            for o in present:
                outcomes[o.export_id] = SendOutcome(o.export_id, False, exc.transient, exc.status, str(exc))
            stored = []
        by_sop = {s.sop_instance_uid: s for s in stored}
        for o in present:
            if o.export_id in outcomes:
                continue
            got = by_sop.get(o.sop_instance_uid)
            if got is None:
                outcomes[o.export_id] = SendOutcome(o.export_id, False, True, None, "not named in the STOW-RS response")
            elif got.ok:
                outcomes[o.export_id] = SendOutcome(o.export_id, True, False, None, None)
            else:
                code = got.reason
                outcomes[o.export_id] = SendOutcome(
                    o.export_id, False, code is not None and status.is_transient(code), code,
                    f"STOW-RS failure reason 0x{code:04X}" if code is not None else "refused by STOW-RS")
        result = [outcomes[o.export_id] for o in objects]
        for o, out in zip(objects, result):
            log.info("export %s to %s: %s", o.sop_instance_uid, destination,
                     "stored" if out.ok else f"failed ({out.error})")
        return result
