"""The local weights registry: name/version -> a file in a weights directory, sha256-checked.

A directory of weights holds ``manifest.json``::

    {"models": [{"name": "spinenode-detector", "version": "0.1.0", "kind": "detector",
                 "file": "detector.pt", "sha256": "<hex>", "meta": {...}}]}

:meth:`Registry.resolve` returns the path of a listed file only after its
sha256 matches the manifest; unknown names, files outside the directory and
altered files are refused. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.types import ModelId, ModelsError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: The weights shipped with the package.
PACKAGE_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class WeightsError(ModelsError):
    """Weights cannot be used."""


class UnknownWeightsError(WeightsError):
    """No entry of that name (and version) in the manifest."""


class AlteredWeightsError(WeightsError):
    """The file's sha256 differs from the manifest, or the file is missing."""


@dataclass(frozen=True, slots=True)
class WeightsEntry:
    name: str
    version: str
    kind: str
    file: str
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> ModelId:
        return ModelId(self.name, self.version)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "kind": self.kind,
            "file": self.file, "sha256": self.sha256, "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WeightsEntry:
        return cls(
            str(d["name"]), str(d["version"]), str(d.get("kind", "")), str(d["file"]),
            str(d["sha256"]).lower(), dict(d.get("meta", {})),
        )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Registry:
    """The weights of one directory, read from its manifest."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root or PACKAGE_WEIGHTS_DIR).resolve()
        self._verified: dict[str, str] = {}

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def entries(self) -> tuple[WeightsEntry, ...]:
        if not self.manifest_path.is_file():
            return ()
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            return tuple(WeightsEntry.from_dict(d) for d in data.get("models", []))
        except (ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"unreadable weights manifest {self.manifest_path}: {exc}") from exc

    def entry(self, name: str, version: str | None = None) -> WeightsEntry:
        found = [e for e in self.entries() if e.name == name and version in (None, e.version)]
        if not found:
            want = f"{name} {version}" if version else name
            raise UnknownWeightsError(f"no weights {want!r} in {self.manifest_path}")
        return max(found, key=lambda e: _version_key(e.version))

    def entry_of_kind(self, kind: str) -> WeightsEntry:
        found = [e for e in self.entries() if e.kind == kind]
        if not found:
            raise UnknownWeightsError(f"no {kind} weights in {self.manifest_path}")
        return max(found, key=lambda e: _version_key(e.version))

    def path_of(self, entry: WeightsEntry) -> Path:
        """The verified local file of an entry (refuses altered or escaping files)."""
        if Path(entry.file).name != entry.file or entry.file in ("", ".", ".."):
            raise AlteredWeightsError(f"weights file {entry.file!r} must be a plain file name")
        path = self.root / entry.file
        if not path.is_file():
            raise AlteredWeightsError(f"weights file {path} is missing")
        digest = sha256_of(path)
        if digest != entry.sha256:
            raise AlteredWeightsError(
                f"weights {entry.name} {entry.version}: sha256 {digest[:12]}… differs from "
                f"the manifest's {entry.sha256[:12]}…"
            )
        return path

    def resolve(self, name: str, version: str | None = None) -> tuple[WeightsEntry, Path]:
        entry = self.entry(name, version)
        return entry, self.path_of(entry)

    def register(
        self, source: Path, name: str, version: str, kind: str,
        file: str | None = None, meta: dict[str, Any] | None = None,
    ) -> WeightsEntry:
        """Copy ``source`` into the directory and list it (replacing the same name/version)."""
        self.root.mkdir(parents=True, exist_ok=True)
        file = file or source.name
        dst = self.root / file
        if source.resolve() != dst.resolve():
            shutil.copyfile(source, dst)
        entry = WeightsEntry(name, version, kind, file, sha256_of(dst), dict(meta or {}))
        kept = [e for e in self.entries() if not (e.name == name and e.version == version)]
        self._write([*kept, entry])
        logger.info("registered weights %s %s (%s)", name, version, file)
        return entry

    def _write(self, entries: list[WeightsEntry]) -> None:
        text = json.dumps({"models": [e.as_dict() for e in entries]}, indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".manifest-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.manifest_path)


def _version_key(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for p in version.split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
