"""Two "hosts" for a test: network namespaces made by the test itself, joined by a veth pair.

Each :class:`NetNamespace` is held by an ``unshare --net sleep`` process the test starts
(no named namespace under /var/run/netns, nothing added to the host's own network): its
veth end and 10.x address exist only inside it, and the namespace disappears when the
holder is killed. Commands run inside with ``nsenter -t PID -n``; :meth:`entered` moves
the calling thread into it (``setns``), so processes it starts and sockets it opens live
there too. Needs root (the test skips otherwise).
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from peers import wait_until

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class NetNamespace:
    """A network namespace held by a child process; loopback up."""

    def __init__(self) -> None:
        own = os.readlink("/proc/thread-self/ns/net")
        self.holder = subprocess.Popen(["/usr/bin/unshare", "--net", "/bin/sleep", "infinity"])
        self.pid = self.holder.pid
        wait_until(lambda: os.readlink(f"/proc/{self.pid}/ns/net") != own, 10, what="the new namespace")
        self.run("ip", "link", "set", "lo", "up")

    @property
    def prefix(self) -> list[str]:
        """argv prefix that runs a command inside."""
        return ["/usr/bin/nsenter", "-t", str(self.pid), "-n"]

    def run(self, *argv: str) -> str:
        r = subprocess.run([*self.prefix, *argv], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in namespace {self.pid}: {r.stderr.strip()}")
        return r.stdout

    @contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread inside the namespace (and back afterwards)."""
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(back)
        finally:
            os.close(target)
            os.close(back)

    def close(self) -> None:
        if self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait()


def link(a: NetNamespace, b: NetNamespace, subnet: str = "10.217.17") -> tuple[str, str]:
    """A veth pair between ``a`` and ``b`` with ``subnet``.1 and .2 (/24); returns them."""
    ip_a, ip_b = f"{subnet}.1", f"{subnet}.2"
    a.run("ip", "link", "add", "spn-a", "type", "veth", "peer", "name", "spn-b")
    a.run("ip", "link", "set", "spn-b", "netns", str(b.pid))
    a.run("ip", "addr", "add", f"{ip_a}/24", "dev", "spn-a")
    a.run("ip", "link", "set", "spn-a", "up")
    b.run("ip", "addr", "add", f"{ip_b}/24", "dev", "spn-b")
    b.run("ip", "link", "set", "spn-b", "up")
    return ip_a, ip_b


class TcpRelay:
    """Forwards ``listen_host:port`` to ``127.0.0.1:target_port`` in the namespace it was
    created in (for peers that bind loopback only, such as the test Redis and PostgreSQL)."""

    def __init__(self, listen_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target_port = target_port
        self.sock = socket.create_server((listen_host, listen_port))
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
