"""dciodvfy (dicom3tools): the validator every SR and SEG must pass."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from peers._base import (
    PathLike,
    _require_binary,
)


@dataclass(frozen=True)
class DciodvfyResult:
    """dciodvfy's verdict on one file."""

    output: str
    returncode: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def dciodvfy(path: PathLike) -> DciodvfyResult:
    """Validate a DICOM file with dicom3tools ``dciodvfy`` (it reports on stderr)."""
    binary = _require_binary("/usr/bin/dciodvfy", "dicom3tools")
    result = subprocess.run([binary, str(path)], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    output = result.stderr + result.stdout
    lines = [line.strip() for line in output.splitlines()]
    return DciodvfyResult(
        output=output,
        returncode=result.returncode,
        errors=[line for line in lines if line.startswith("Error")],
        warnings=[line for line in lines if line.startswith("Warning")],
    )
