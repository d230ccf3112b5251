"""Everything the node changes inside pynetdicom, in one version-checked place.

pynetdicom 3.0 leaves two things open that a node on a hospital network cannot, one
race that stalls a requestor, and one thing that costs speed:

* **Declared PDU lengths are not checked.** ``DULServiceProvider._read_pdu_data``
  reads whatever length a peer declares into memory (a P-DATA-TF declaring 600 MiB
  against an advertised 128 KiB maximum raised the node's RSS by 600 MB). Here the
  header is read first and a PDU longer than the maximum the node advertised (for
  P-DATA-TF, PS3.8 9.3.5; :data:`MAX_CONTROL_PDU` for the others) is refused: the
  association is aborted (A-ABORT, as for an invalid PDU), the socket closed without
  reading the body, and the ``on_refused`` callback of the AE's :class:`ReceiveGuard`
  logs and counts it. An accepted PDU is read into one buffer of its exact size with
  ``recv_into`` (pynetdicom grows a ``bytearray`` 4 KiB at a time).
* **Received data sets go to disk as they arrive.** pynetdicom's public
  ``STORE_RECV_CHUNKED_DATASET`` writes each C-STORE data set to a temporary file
  fragment by fragment; here that file is created in the node's own receiving
  directory (same file system as the spool, so the handler renames it into place
  instead of copying it), and its bytes count against a node-wide cap on bytes in
  flight (:class:`InFlight`): a data set that would pass the cap is not written
  further and its C-STORE is refused with 0xA700 (:func:`overflowed`). Files of
  aborted transfers are removed when their connection closes (:func:`discard_partials`).
* **A requestor's response can be stolen.** ``Association.send_c_store`` (and every
  ``send_*``) pauses the association's reactor thread before it sends a request and
  waits for the response itself: it clears ``_reactor_checkpoint`` and waits until
  ``_is_paused``. But the reactor sets ``_is_paused = True`` before it waits on the
  checkpoint and ``False`` only after the wait returned, so right after the previous
  ``send_*`` un-paused it, ``_is_paused`` is still True while the reactor is already on
  its way to take a message off the queue. The next request then goes out, the
  reactor takes its response ("Received unexpected C-ECHO service message") and the
  requestor waits for nothing until its DIMSE timeout or the peer's network timeout
  aborts the association. Seen under load in about 1 of 50 C-STORE + C-ECHO pairs on
  one association (``tests/test_fuzz_cstore.py``); the export's C-STOREs share the path.
  (``Event.wait`` also returns True when it was notified and a ``clear()`` came before
  it got its lock back, and the reactor runs on.) :func:`fix_requestor_pause` gives
  every association a checkpoint whose ``wait`` returns only while the flag is still
  set and clears ``_is_paused`` under the checkpoint's own lock, so a ``clear()`` that
  follows sees the truth and the requestor waits for the reactor to park. The receiver, the
  export and ``spinenode send``/``echo`` install it; :func:`apply` does too.
* **Polling.** Two threads per association poll with 1 ms sleeps (about 1.3 ms of
  latency per C-STORE, and CPU whether busy or idle; docs/performance.md). Here both
  wait for work instead: the DUL thread in a ``select`` on its peer socket and a wake
  socket rung whenever a primitive is queued for sending (``send_pdu``), the
  association thread on an event the DUL thread sets after every state machine action
  (a DIMSE message decoded, a release or abort received). Both wait at most
  :data:`IDLE_POLL` (50 ms), which bounds how late a timer or a kill is noticed. Idle
  associations cost 20 wake-ups a second per thread.

This touches private code, so :func:`apply` runs only on a pynetdicom version it was
checked on (:data:`CHECKED_VERSIONS`) whose patched functions still have the source
they were checked against (:data:`CHECKED_SOURCES`, SHA-256 of ``inspect.getsource``);
otherwise it logs a warning and leaves pynetdicom stock (no PDU length check, received
files in the system temp directory and copied into the spool, 1 ms polling: slower and
less guarded, still correct). ``tests/test_scp_limits.py`` fails when the installed
version or these sources change, so an upgrade cannot silently drop the guards.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Longest wait of either reactor thread (seconds): bounds how late a timer (ARTIM,
#: network timeout) or a kill is noticed; data and primitives wake the threads at once.
IDLE_POLL = 0.05
#: Longest accepted PDU other than P-DATA-TF (A-ASSOCIATE-RQ with many contexts, release, abort).
MAX_CONTROL_PDU = 1 << 20
#: pynetdicom versions (major.minor.patch prefixes) whose internals this module was checked on.
CHECKED_VERSIONS = ("3.0.4",)
#: SHA-256 (first 16 hex digits) of the source of every pynetdicom function this module
#: replaces or relies on, as checked.
CHECKED_SOURCES = {
    "dul.DULServiceProvider._read_pdu_data": "19f2d4e38c13c835",
    "dul.DULServiceProvider.run_reactor": "e3a10eb3a0931e48",
    "dul.DULServiceProvider._is_transport_event": "8725ed03bb8fbdef",
    "dul.DULServiceProvider._process_recv_primitive": "4c0ebbb3e646e35e",
    "dul.DULServiceProvider.__init__": "c82dafa9438ddf70",
    "dul.DULServiceProvider.send_pdu": "7cbce5da8594124e",
    "fsm.StateMachine.do_action": "9a883f44c7f31641",
    "association.Association._run_reactor": "f28838c5559e462a",
    "association.Association.__init__": "eb07516b8009ad8f",
    "dimse_messages.DIMSEMessage.decode_msg": "f51c777e841a76be",
    "service_class.StorageServiceClass.SCP": "63afca7fc6c6e7ee",
}
#: The literal delay of ``Association._run_reactor`` in the checked versions.
_ASSOCIATION_REACTOR_SLEEP = 0.001
_P_DATA_TF = 0x04
_GUARD_ATTRIBUTE = "_spinenode_guard"

_applied = False
_pause_fixed = False
_pause_checked = False
_apply_lock = threading.Lock()


class InFlight:
    """Bytes of data sets being received, node-wide (all associations of this process)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self.bytes = 0
        self.peak = 0

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (nothing reserved) if that would pass the cap."""
        with self._lock:
            if self.cap and self.bytes + n > self.cap:
                return False
            self.bytes += n
            self.peak = max(self.peak, self.bytes)
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.bytes -= n


#: ``on_refused(assoc, reason, detail)``: log and count a refusal made inside pynetdicom.
Refusal = Callable[[Any, str, str], None]


@dataclass
class ReceiveGuard:
    """The limits of one AE, attached to it by :func:`guard_ae`."""

    max_pdu: int
    on_refused: Refusal
    receive_dir: Path | None = None
    inflight: InFlight = field(default_factory=lambda: InFlight(0))
    _open: dict[str, _CountedFile] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def limit_for(self, pdu_type: int) -> int:
        """Largest PDU length (the 4-byte field) accepted for ``pdu_type``; 0 = no limit."""
        return self.max_pdu if pdu_type == _P_DATA_TF else MAX_CONTROL_PDU


class _CountedFile:
    """Wraps pynetdicom's temporary data set file: counts bytes against the cap."""

    def __init__(self, inner: Any, guard: ReceiveGuard, assoc: Any) -> None:
        self._inner = inner
        self._guard = guard
        self.name: str = inner.name
        self.assoc_id = id(assoc)
        self.written = 0
        self.over = False
        self.file = self  # pynetdicom calls ``.file.flush()``

    def write(self, data: bytes) -> int:
        if self.over:
            return len(data)
        if not self._guard.inflight.take(len(data)):
            self.over = True  # stop writing; the handler refuses with 0xA700
            self._inner.truncate(0)
            return len(data)
        self.written += len(data)
        return int(self._inner.write(data))

    def flush(self) -> None:
        self._inner.flush()

    def close(self) -> None:
        with self._guard._lock:
            if self._guard._open.pop(self.name, None) is None:
                return
        self._guard.inflight.give(self.written)
        self._inner.close()


def guard_ae(ae: Any, guard: ReceiveGuard) -> None:
    """Attach ``guard`` to ``ae`` (the first one attached stays); takes effect for its
    associations once :func:`apply` ran."""
    if not isinstance(getattr(ae, _GUARD_ATTRIBUTE, None), ReceiveGuard):
        setattr(ae, _GUARD_ATTRIBUTE, guard)


def _guard_of_assoc(assoc: Any) -> ReceiveGuard | None:
    guard = getattr(getattr(assoc, "ae", None), _GUARD_ATTRIBUTE, None)
    return guard if isinstance(guard, ReceiveGuard) else None


def overflowed(event: Any) -> bool:
    """True if the C-STORE data set of ``event`` was cut off by the in-flight cap."""
    guard = _guard_of_assoc(event.assoc)
    path = getattr(event.request, "_dataset_path", None)
    if guard is None or path is None:
        return False
    counted = guard._open.get(str(path))
    return bool(counted and counted.over)


def discard_partials(assoc: Any) -> int:
    """Close and delete the data set files of ``assoc`` still open (an aborted transfer)."""
    guard = _guard_of_assoc(assoc)
    if guard is None:
        return 0
    with guard._lock:
        mine = [f for f in guard._open.values() if f.assoc_id == id(assoc)]
    for counted in mine:
        counted.close()
        try:
            os.unlink(counted.name)
        except OSError:
            pass
    return len(mine)


# --- internals check -----------------------------------------------------------------


def _source_digests() -> dict[str, str]:
    import importlib

    out: dict[str, str] = {}
    for dotted in CHECKED_SOURCES:
        module_name, cls_name, func_name = dotted.split(".")
        try:
            module = importlib.import_module(f"pynetdicom.{module_name}")
            func = getattr(getattr(module, cls_name), func_name)
            source = inspect.getsource(func)
        except (ImportError, AttributeError, OSError, TypeError):
            out[dotted] = "missing"
            continue
        out[dotted] = hashlib.sha256(source.encode()).hexdigest()[:16]
    return out


def internals_match() -> list[str]:
    """Names of the checked pynetdicom functions whose source differs (empty: all match)."""
    return [name for name, digest in _source_digests().items() if CHECKED_SOURCES[name] != digest]


# --- the patches ---------------------------------------------------------------------


class _Wake:
    """A socket pair the DUL thread waits on beside its peer socket: rung when a
    primitive is queued for sending, so the thread never polls for outgoing work."""

    def __init__(self) -> None:
        self.r, self.w = socket.socketpair()
        self.r.setblocking(False)
        self.w.setblocking(False)

    def ring(self) -> None:
        try:
            self.w.send(b"\0")
        except OSError:  # full (already rung) or closed (the DUL has ended)
            pass

    def drain(self) -> None:
        try:
            while self.r.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.r.close()
        self.w.close()


class _DulTime:
    """Stands in for :mod:`time` in ``pynetdicom.dul``: the reactor's idle sleep becomes
    a ``select`` on the peer socket and the wake socket, for at most :data:`IDLE_POLL`."""

    def sleep(self, seconds: float) -> None:
        dul = threading.current_thread()
        wake = getattr(dul, "_spinenode_wake", None)
        if not isinstance(wake, _Wake):
            time.sleep(seconds)
            return
        raw = getattr(getattr(dul, "socket", None), "socket", None)
        waiting: list[Any] = [wake.r]
        if raw is not None:
            pending = getattr(raw, "pending", None)
            if callable(pending) and pending():
                return  # TLS: decrypted bytes buffered that select cannot see
            waiting.append(raw)
        try:
            select.select(waiting, [], [], IDLE_POLL)
        except (OSError, ValueError, TypeError):
            time.sleep(min(seconds, IDLE_POLL))
        wake.drain()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class _AssociationTime:
    """Stands in for :mod:`time` in ``pynetdicom.association``: the reactor's 1 ms sleep
    becomes a wait on an event the DUL thread sets after every state machine action
    (a DIMSE message decoded, a release or abort received), at most :data:`IDLE_POLL`."""

    def sleep(self, seconds: float) -> None:
        event = getattr(threading.current_thread(), "_spinenode_event", None)
        if seconds != _ASSOCIATION_REACTOR_SLEEP or not isinstance(event, threading.Event):
            time.sleep(seconds)
            return
        event.wait(IDLE_POLL)
        event.clear()  # before the reactor looks: a later set() is never lost

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _read_pdu_data(self: Any, original: Callable[[Any], None]) -> None:
    """``DULServiceProvider._read_pdu_data`` with the declared length checked first."""
    guard = _guard_of_assoc(self.assoc)
    if guard is None:
        original(self)
        return
    sock = self.socket
    if getattr(self, "_spinenode_refused", False):
        sock.close()  # Evt17: never read the body of a refused PDU
        return
    raw = sock.socket
    header = bytearray(6)
    try:
        got = _recv_into(raw, memoryview(header))
    except (OSError, TimeoutError):
        got = -1
    if got != 6:
        self.event_queue.put("Evt17")  # closed (or short) before a PDU header
        return
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
        self.event_queue.put("Evt19")  # unrecognised PDU: A-ABORT
        return
    limit = guard.limit_for(pdu_type)
    if limit and length > limit:
        self._spinenode_refused = True
        guard.on_refused(self.assoc, "pdu_too_large",
                         f"PDU type 0x{pdu_type:02X} declares {length} bytes, limit {limit}")
        self.event_queue.put("Evt19")  # AA-8 / AA-1: A-ABORT, then close
        return
    buffer = bytearray(6 + length)
    buffer[:6] = header
    try:
        got = _recv_into(raw, memoryview(buffer)[6:])
    except (OSError, TimeoutError):
        got = -1
    if got != length:
        self.event_queue.put("Evt17")
        return
    try:
        pdu, event = self._decode_pdu(buffer)
    except Exception:  # pynetdicom's own rule: an undecodable PDU is Evt19
        log.warning("undecodable PDU of type 0x%02X (%d bytes): aborting", pdu_type, length)
        self.event_queue.put("Evt19")
        return
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)


def _recv_into(raw: Any, view: memoryview) -> int:
    """Fill ``view`` from the socket; returns the bytes read (fewer: the peer closed)."""
    total = 0
    n = len(view)
    while total < n:
        got = raw.recv_into(view[total:], n - total)
        if not got:
            break
        total += got
    return total


def _install_wakes(provider: Any, state_machine: Any) -> None:
    """Give every DUL a wake socket and its association an event, and ring them."""
    original_init = provider.__init__
    original_run = provider.run_reactor
    original_send = provider.send_pdu
    original_action = state_machine.do_action

    @functools.wraps(original_init)
    def init(self: Any, assoc: Any) -> None:
        original_init(self, assoc)
        self._spinenode_wake = _Wake()
        assoc._spinenode_event = threading.Event()

    @functools.wraps(original_run)
    def run_reactor(self: Any) -> None:
        try:
            original_run(self)
        finally:
            self._spinenode_wake.close()
            self.assoc._spinenode_event.set()

    @functools.wraps(original_send)
    def send_pdu(self: Any, primitive: Any) -> None:
        original_send(self, primitive)
        self._spinenode_wake.ring()

    @functools.wraps(original_action)
    def do_action(self: Any, event: str) -> None:
        try:
            original_action(self, event)
        finally:
            self.dul.assoc._spinenode_event.set()

    provider.__init__ = init
    provider.run_reactor = run_reactor
    provider.send_pdu = send_pdu
    state_machine.do_action = do_action


def _temp_file_factory(original: Callable[..., Any]) -> Callable[..., Any]:
    def make(*args: Any, **kwargs: Any) -> Any:
        from pynetdicom.dul import DULServiceProvider

        dul = threading.current_thread()
        assoc = dul.assoc if isinstance(dul, DULServiceProvider) else None
        guard = _guard_of_assoc(assoc)
        if guard is None or guard.receive_dir is None:
            return original(*args, **kwargs)
        kwargs.setdefault("dir", str(guard.receive_dir))
        kwargs.setdefault("prefix", ".recv-")
        counted = _CountedFile(original(*args, **kwargs), guard, assoc)
        with guard._lock:
            guard._open[counted.name] = counted
        return counted

    return make


class _ReactorCheckpoint(threading.Event):
    """``Association._reactor_checkpoint`` whose ``wait`` marks the reactor as running
    (``_is_paused = False``) under the event's own lock before it returns, so that a
    ``clear()`` by a ``send_*`` method, which takes the same lock, is followed by a true
    ``_is_paused`` only once the reactor has parked again (module docstring)."""

    def __init__(self, assoc: Any) -> None:
        super().__init__()
        self._assoc = assoc

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:  # threading.Event's own lock: clear() and set() take it too
            # Event.wait returns True once notified even when a clear() came before it
            # got the lock back: the reactor then ran on while the requestor, which read
            # _is_paused = True, had sent its request. Here only a flag still set counts.
            while not self._flag:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            # The reactor's other wait (network timeout with the "A-RELEASE" response)
            # calls release() next in the same thread, which waits for _is_paused: left
            # stock there (the node keeps pynetdicom's default, "A-ABORT").
            if self._assoc.network_timeout_response != "A-RELEASE":
                self._assoc._is_paused = False
            return True


def fix_requestor_pause() -> bool:
    """Install :class:`_ReactorCheckpoint` in every new association (once per process).

    True if in effect; False (a warning logged, pynetdicom stock) on a pynetdicom
    version or internals this module was not checked against."""
    global _pause_fixed, _pause_checked
    import pynetdicom
    from pynetdicom import association

    with _apply_lock:
        if _pause_checked:  # once per process: the exporter calls this before every send
            return _pause_fixed
        _pause_checked = True
        version = str(getattr(pynetdicom, "__version__", "?"))
        if not version.startswith(CHECKED_VERSIONS) or internals_match():
            log.warning("pynetdicom %s is not a checked version or its internals differ: the "
                        "requestor pause race stays (a response may be lost until a timeout)", version)
            return False
        original_init = association.Association.__init__

        @functools.wraps(original_init)
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            checkpoint = _ReactorCheckpoint(self)
            checkpoint.set()
            self._reactor_checkpoint = checkpoint

        association.Association.__init__ = init  # type: ignore[method-assign]
        _pause_fixed = True
    return True


def apply() -> bool:
    """Install the PDU length check, the receiving-file hook and event-driven reactors (once).

    Returns True if in effect, False if this pynetdicom version or its internals are not
    the ones this module knows (a warning is logged; pynetdicom stays stock).
    ``STORE_RECV_CHUNKED_DATASET`` (public) is set either way.
    """
    global _applied
    import pynetdicom
    from pynetdicom import _config, association, dimse_messages, dul, fsm

    _config.STORE_RECV_CHUNKED_DATASET = True
    with _apply_lock:
        if _applied:
            return True
        version = str(getattr(pynetdicom, "__version__", "?"))
        if not version.startswith(CHECKED_VERSIONS):
            log.warning("pynetdicom %s is not a checked version (%s): no PDU length check, "
                        "stock polling", version, ", ".join(CHECKED_VERSIONS))
            return False
        differ = internals_match()
        if differ or association.time is not time or dul.time is not time:
            log.warning("pynetdicom %s internals differ from the checked ones (%s): "
                        "no PDU length check, stock polling", version, ", ".join(differ) or "time")
            return False
        provider = dul.DULServiceProvider
        original_read = provider._read_pdu_data

        def read_pdu_data(self: Any) -> None:
            _read_pdu_data(self, original_read)

        provider._read_pdu_data = read_pdu_data  # type: ignore[method-assign]
        _install_wakes(provider, fsm.StateMachine)
        dul.time = _DulTime()  # type: ignore[assignment]
        association.time = _AssociationTime()  # type: ignore[assignment]
        dimse_messages.NamedTemporaryFile = _temp_file_factory(  # type: ignore[assignment]
            dimse_messages.NamedTemporaryFile)
        _applied = True
    fix_requestor_pause()
    log.debug("pynetdicom %s: PDU length check, receiving files, event-driven reactors", version)
    return True
