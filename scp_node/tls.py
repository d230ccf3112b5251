"""TLS contexts for DICOM (PS3.15 Annex B secure transport) from the settings."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from scp_node.errors import ConfigError
from scp_node.settings import Settings

log = logging.getLogger(__name__)


def server_context(settings: Settings) -> ssl.SSLContext:
    """The listener's context: our certificate; client certificates required when TLS_CA is set."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
        if settings.tls_ca:
            ctx.load_verify_locations(cafile=str(settings.tls_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"invalid setting SPINENODE_TLS_CERT/TLS_KEY/TLS_CA: {exc}") from exc
    return ctx


def client_context(settings: Settings) -> ssl.SSLContext:
    """The export SCU's context: verifies the PACS (TLS_CA or the system store), presents our cert if set."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.tls_ca) if settings.tls_ca else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if settings.tls_cert and settings.tls_key:
            ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"invalid setting SPINENODE_TLS_CERT/TLS_KEY/TLS_CA: {exc}") from exc
    return ctx


def start_tls_scp(settings: Settings, ingestor: Any, counters: Any, admission: Any = None) -> Any:
    """A second receiver on DICOM_TLS_PORT: same AE, same handlers, TLS transport.

    Runs as threads of the node process (the TLS listener is for sites that need
    encryption on the wire, typically at lower volume than the plain port).
    """
    from scp_node.scp import build_ae, scp_handlers

    ae = build_ae(settings)
    server = ae.start_server(
        (settings.dicom_host, settings.dicom_tls_port),
        block=False,
        evt_handlers=scp_handlers(settings, ingestor, counters, admission),
        ssl_context=server_context(settings),
    )
    log.info("DICOM TLS receiver %s listening on %s:%d", settings.ae_title, *server.server_address[:2])
    return server
