"""Real peers for tests: DCMTK, Orthanc, redis-server, PostgreSQL, Flower and dciodvfy.

Every peer runs as a child process on a free port bound to (or addressed on) loopback,
with its own temporary working directory and log file.  Processes are stopped by PID:
a graceful signal first, SIGKILL to the process group after a timeout.  A crashed test
run cannot leave orphans behind either: children started from the main thread get
``PR_SET_PDEATHSIG`` and anything still running at interpreter exit is killed.

Nothing here imports pytest; ``peer_fixtures.py`` wraps these classes as fixtures.
Binaries come from Debian packages (``scripts/install-test-deps.sh``); a missing one
raises :class:`PeerError` naming the package, it never skips.

storescp and Orthanc listen on all interfaces (neither can bind to one address in the
packaged versions): send traffic to ``127.0.0.1`` only.
"""

from __future__ import annotations

from peers._base import LOOPBACK, PeerError, free_port, listens_on, wait_for_port, wait_until
from peers.dcmtk import StorescpServer, dcmtk_env, dcmtk_tool, echoscu, storescu
from peers.dicom3tools import DciodvfyResult, dciodvfy
from peers.flower import FlowerServer
from peers.orthanc import OrthancServer
from peers.postgres import PostgresServer
from peers.redis_server import RedisServer

__all__ = [
    "LOOPBACK",
    "DciodvfyResult",
    "FlowerServer",
    "OrthancServer",
    "PeerError",
    "PostgresServer",
    "RedisServer",
    "StorescpServer",
    "dciodvfy",
    "dcmtk_env",
    "dcmtk_tool",
    "echoscu",
    "free_port",
    "listens_on",
    "storescu",
    "wait_for_port",
    "wait_until",
]
