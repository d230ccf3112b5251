"""The destination schemes the node exports to, and the exporter that serves each.

This table is the one place a destination scheme is registered. Settings check
``DESTINATIONS`` against it when they are loaded (a mistyped scheme stops the node with
one line, exit 2), and the export stage loads the exporter it names when it first sends
to such a destination (``workers.export.exporter_for``). The exporters are named as
``module:attribute`` strings, so this floor imports nothing above it.

Adding a scheme is one exporter module in ``workers/exporters/`` (a class with the
``Exporter`` protocol's ``send``) and one line here (docs/architecture.md).
"""

from __future__ import annotations

from typing import Final

#: The scheme of ``AE@HOST:PORT[;tls][;ts=...]`` destinations (no ``://``).
DIMSE: Final = "dimse"

#: Destination scheme -> the exporter class that serves it, as ``module:attribute``.
EXPORTERS: Final[dict[str, str]] = {
    DIMSE: "workers.exporters.dimse:DimseExporter",
    "dicomweb+http": "workers.exporters.stow:StowExporter",
    "dicomweb+https": "workers.exporters.stow:StowExporter",
}

#: The schemes given as URLs (``SCHEME://HOST[:PORT]/PATH``).
URL_SCHEMES: Final = frozenset(s for s in EXPORTERS if s != DIMSE)


def scheme_of(destination: str) -> str:
    """The scheme of a destination as given in ``DESTINATIONS``."""
    return destination.split("://", 1)[0] if "://" in destination else DIMSE
