"""Streaming ``multipart/related`` (RFC 2387) for DICOMweb: WADO-RS and STOW-RS bodies.

Both directions stream: :func:`iter_multipart` yields a body part by part from files
(:func:`iter_multipart_bytes` from parts in memory),
and :class:`MultipartSplitter` takes a body in chunks of any size and writes each part
to a sink as it arrives, holding at most one boundary's length plus a chunk in memory.
Used by the node (``scp_node.admin.dicomweb``) and by the workers' client.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

DICOM = "application/dicom"
CHUNK = 256 * 1024
#: The most header bytes a part may have (a part header is a few short lines).
MAX_HEADER_BYTES = 16 * 1024

_BOUNDARY_RE = re.compile(r'boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


class MultipartError(ValueError):
    """The body is not well-formed multipart (bad boundary, truncated, oversized header)."""


def new_boundary() -> str:
    return f"spinenode-{uuid.uuid4().hex}"


def content_type(boundary: str, part_type: str = DICOM) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def boundary_of(header: str | None) -> str:
    """The boundary parameter of a ``multipart/related`` Content-Type header."""
    if not header or not header.lower().lstrip().startswith("multipart/related"):
        raise MultipartError("Content-Type is not multipart/related")
    m = _BOUNDARY_RE.search(header)
    if not m:
        raise MultipartError("multipart/related without a boundary")
    boundary = m.group(1) or m.group(2)
    if not 1 <= len(boundary) <= 70:
        raise MultipartError("multipart boundary longer than 70 characters")
    return boundary


def iter_multipart(files: Iterable[Path], boundary: str, part_type: str = DICOM,
                   chunk: int = CHUNK) -> Iterator[bytes]:
    """The body of a multipart message with one part per file, read in chunks."""
    delim = f"--{boundary}\r\n".encode()
    for path in files:
        size = path.stat().st_size
        yield delim + f"Content-Type: {part_type}\r\nContent-Length: {size}\r\n\r\n".encode()
        with path.open("rb") as fh:
            while block := fh.read(chunk):
                yield block
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def iter_multipart_bytes(parts: Iterable[tuple[Mapping[str, str], bytes]], boundary: str,
                         part_type: str = DICOM) -> Iterator[bytes]:
    """The body of a multipart message from parts held in memory, each with extra part
    headers (``Content-Location``, say) beside its Content-Type and Content-Length."""
    delim = f"--{boundary}\r\n".encode()
    for headers, data in parts:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        yield (delim + f"Content-Type: {part_type}\r\n{extra}Content-Length: {len(data)}\r\n\r\n".encode()
               + data + b"\r\n")
    yield f"--{boundary}--\r\n".encode()


class PartSink(Protocol):
    def write(self, data: bytes) -> object: ...


class MultipartSplitter:
    """Push parser: ``feed`` chunks, each part's bytes go to the sink ``open_part`` returns.

    ``open_part(headers)`` is called with the part's headers (lower-case names) and
    returns a sink; ``close_part(sink)`` is called when the part's body has ended.
    ``finish()`` raises :class:`MultipartError` if the closing boundary never came.
    """

    def __init__(self, boundary: str, open_part: Callable[[dict[str, str]], PartSink],
                 close_part: Callable[[PartSink], None]) -> None:
        self._dash = b"--" + boundary.encode()
        self._delim = b"\r\n" + self._dash
        self._open = open_part
        self._close = close_part
        self._buf = bytearray()
        self._state = "preamble"
        self._sink: PartSink | None = None
        self.parts = 0

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, data: bytes) -> None:
        if self._state == "done":
            return  # epilogue: ignored
        self._buf += data
        while self._step():
            pass

    def finish(self) -> None:
        if self._state != "done":
            raise MultipartError("multipart body ended before its closing boundary")

    def _step(self) -> bool:
        buf = self._buf
        if self._state == "preamble":
            idx = buf.find(self._dash)
            if idx < 0:
                del buf[: max(0, len(buf) - len(self._dash) + 1)]
                return False
            del buf[: idx + len(self._dash)]
            self._state = "after-boundary"
            return True
        if self._state == "after-boundary":
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = "done"
                buf.clear()
                return False
            eol = buf.find(b"\r\n")
            if eol < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise MultipartError("garbage after a multipart boundary")
                return False
            del buf[: eol + 2]
            self._state = "headers"
            return True
        if self._state == "headers":
            end = buf.find(b"\r\n\r\n") if not buf.startswith(b"\r\n") else -2
            if end == -1:
                if len(buf) > MAX_HEADER_BYTES:
                    raise MultipartError("multipart part header too long")
                return False
            raw = bytes(buf[: max(end, 0)])
            del buf[: max(end, 0) + (4 if end >= 0 else 2)]
            headers: dict[str, str] = {}
            for line in raw.decode("latin-1").split("\r\n"):
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            self._sink = self._open(headers)
            self.parts += 1
            self._state = "body"
            return True
        if self._state == "body":
            assert self._sink is not None
            idx = buf.find(self._delim)
            if idx < 0:
                keep = len(self._delim) - 1
                if len(buf) > keep:
                    self._sink.write(bytes(buf[: len(buf) - keep]))
                    del buf[: len(buf) - keep]
                return False
            if idx:
                self._sink.write(bytes(buf[:idx]))
            del buf[: idx + len(self._delim)]
            self._close(self._sink)
            self._sink = None
            self._state = "after-boundary"
            return True
        return False
