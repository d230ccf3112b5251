"""TLS contexts for DICOM (PS3.15 Annex B secure transport) from the settings."""

from __future__ import annotations

import logging
import ssl

from spinenode.core.errors import ConfigError
from spinenode.core.settings import Settings

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
