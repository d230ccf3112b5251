"""Checks of ``DATA_DIR`` before a command uses it, each failing with one line that names
the setting (:class:`~spinenode.core.errors.ConfigError`, exit code 2 in the CLI)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from spinenode.core.errors import ConfigError
from spinenode.core.settings import ENV_PREFIX, Settings

_NAME = f"{ENV_PREFIX}DATA_DIR"


def prepare_data_dir(settings: Settings) -> Path:
    """Create ``DATA_DIR`` if needed and prove it is a writable directory (``serve``, ``worker``)."""
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"invalid setting {_NAME}: {path} exists and is not a directory") from None
    except NotADirectoryError:
        raise ConfigError(f"invalid setting {_NAME}: a part of {path} is a file, not a directory") from None
    except OSError as exc:
        raise ConfigError(f"invalid setting {_NAME}: cannot create {path}: {exc.strerror}") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"invalid setting {_NAME}: cannot write in {path}: {exc.strerror}") from None
    return path


def existing_node(settings: Settings) -> None:
    """Refuse a ``DATA_DIR`` where no node has run (``status``, ``retry``): a mistyped path
    must be an error, not an idle node with an empty database created on the spot."""
    path = settings.data_dir
    if not path.is_dir():
        raise ConfigError(f"invalid setting {_NAME}: {path} does not exist (is it the node's DATA_DIR?)")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"invalid setting {_NAME}: {path} cannot be read")
    db_file = _sqlite_file(settings.database_url)
    if db_file is not None and not db_file.is_file():
        where = f"{_NAME} {path}" if db_file.parent == path else f"{ENV_PREFIX}DATABASE_URL"
        raise ConfigError(f"invalid setting {where}: no node database at {db_file}")
    if settings.embedded_broker and not settings.broker_dir.is_dir():
        raise ConfigError(f"invalid setting {_NAME}: no embedded broker under {path} "
                          f"(set {ENV_PREFIX}BROKER_URL if the node uses Redis)")


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or ":memory:" in url:
        return None
    return Path(url[len(prefix):].split("?", 1)[0])
