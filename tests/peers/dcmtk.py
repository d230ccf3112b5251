"""DCMTK command-line tools (storescu, echoscu) and storescp as a peer."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

from peers._base import (
    LOOPBACK,
    PathLike,
    PeerError,
    _Peer,
    _Process,
    _require_binary,
    _start_with_retries,
    free_port,
    listens_on,
    wait_until,
)


@functools.cache
def dcmtk_tool(name: str) -> str:
    """Absolute path of a DCMTK tool, checked to be DCMTK.

    pynetdicom installs console scripts with the same names (storescu, storescp,
    echoscu...) into the venv; never rely on PATH for these.
    """
    path = _require_binary(f"/usr/bin/{name}", "dcmtk")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    if "dcmtk" not in (out.stdout + out.stderr).lower():
        raise PeerError(f"{path} --version does not mention DCMTK: {out.stdout[:200]!r}")
    return path


def dcmtk_env() -> dict[str, str]:
    """Environment for DCMTK processes: Nagle off (``TCP_NODELAY=1``)."""
    return {**os.environ, "TCP_NODELAY": "1"}


def _as_paths(files_or_dir: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(files_or_dir, (str, os.PathLike)):
        return [Path(files_or_dir)]
    return [Path(p) for p in files_or_dir]


def storescu(
    files_or_dir: PathLike | Iterable[PathLike],
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = "STORESCU",
    extra_args: Sequence[str] = (),
    timeout: float = 120,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Send files (or directories, scanned recursively) with DCMTK storescu.

    ``extra_args`` pass through, e.g. ``("-xs",)`` to propose JPEG lossless SV1 or
    ``("-xt",)`` for JPEG-LS; by default storescu proposes uncompressed syntaxes only.
    With ``check=True`` a non-zero exit raises :class:`PeerError` with the output.
    """
    paths = _as_paths(files_or_dir)
    scan = ["+sd", "+r"] if any(p.is_dir() for p in paths) else []
    argv = [
        dcmtk_tool("storescu"), "-aet", calling_ae, "-aec", called_ae, *scan, *extra_args,
        host, str(port), *map(str, paths),
    ]
    return _run_dcmtk(argv, timeout, check)


def echoscu(
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = "ECHOSCU",
    timeout: float = 30,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """C-ECHO with DCMTK echoscu."""
    argv = [dcmtk_tool("echoscu"), "-aet", calling_ae, "-aec", called_ae, host, str(port)]
    return _run_dcmtk(argv, timeout, check)


def _run_dcmtk(argv: list[str], timeout: float, check: bool) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=dcmtk_env(),
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise PeerError(
            f"{Path(argv[0]).name} exited with status {result.returncode}:\n"
            f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
        )
    return result


class StorescpServer(_Peer):
    """DCMTK storescp: a C-STORE SCP writing every received file into ``output_dir``.

    Accepts all storage SOP classes and all supported transfer syntaxes (``+xa``),
    writes received data bit-preserving (``+B``).  Listens on all interfaces.
    """

    name = "storescp"

    def __init__(
        self,
        workdir: PathLike | None = None,
        ae_title: str = "STORESCP",
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir)
        self.ae_title = ae_title
        self.port = port or 0
        self._fixed_port = port is not None
        self.extra_args = tuple(extra_args)
        self.output_dir = self.workdir / "received"
        self.output_dir.mkdir(exist_ok=True)

    def start(self) -> Self:
        _start_with_retries(self._start_once, self._fixed_port)
        return self

    def _start_once(self, fresh_port: bool) -> None:
        if fresh_port or not self.port:
            self.port = free_port()
        argv = [
            dcmtk_tool("storescp"), "-aet", self.ae_title, "-od", str(self.output_dir),
            # an association profile (-xf FILE PROFILE) replaces "accept all"
            *([] if "-xf" in self.extra_args else ["+xa"]), "+B", "-dhl", *self.extra_args, str(self.port),
        ]
        proc = _Process("storescp", argv, self.log_path, env=dcmtk_env(), cwd=self.workdir)
        self._proc = proc

        def ready() -> bool:
            proc.check_alive()
            return listens_on(proc.pid, self.port)

        self._wait_ready(proc, ready, f"storescp on port {self.port}")

    @property
    def destination(self) -> str:
        """``AE@127.0.0.1:PORT``, the form of the node's ``DESTINATIONS`` setting."""
        return f"{self.ae_title}@{LOOPBACK}:{self.port}"

    def files(self) -> list[Path]:
        """Received files, sorted by name (storescp names them ``MR.<SOP UID>`` etc.)."""
        return sorted(p for p in self.output_dir.rglob("*") if p.is_file())

    def wait_for_files(self, count: int, timeout: float = 30) -> list[Path]:
        """Wait until at least ``count`` files have arrived and return them."""
        wait_until(lambda: len(self.files()) >= count, timeout,
                   what=f"{count} files in storescp output")
        return self.files()
