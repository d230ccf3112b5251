"""Configure ultralytics for machines without internet, before it is imported.

ultralytics reads ``YOLO_OFFLINE``, ``YOLO_AUTOINSTALL`` and
``YOLO_CONFIG_DIR`` at import time, asks for the font ``Arial.ttf`` over the
network when it trains, and downloads any ``.pt`` name that is not a local
file. :func:`load_ultralytics` sets the environment, places a local font,
imports ultralytics and turns its integrations off; every module of this
package that needs ultralytics goes through it (toolchain.md, "ultralytics 8.4
offline").
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

from models.types import ModelsError

logger = logging.getLogger(__name__)

#: Environment variable naming the directory ultralytics may write to.
CONFIG_DIR_ENV = "SPINENODE_YOLO_DIR"
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")


class OfflineConfigError(ModelsError):
    """ultralytics could not be configured to run without the network."""


def default_config_dir() -> Path:
    env = os.environ.get(CONFIG_DIR_ENV) or os.environ.get("YOLO_CONFIG_DIR")
    if env:
        return Path(env).resolve()
    return (Path.home() / ".cache" / "spinenode" / "ultralytics").resolve()


def _font_source() -> Path:
    """A TTF shipped with matplotlib (a dependency of ultralytics)."""
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not font.is_file():
        raise OfflineConfigError(f"no local TTF font found at {font}")
    return font


def place_fonts(config_dir: Path) -> None:
    """Put a local TTF where ultralytics looks for Arial, so it never downloads one."""
    target = config_dir / "Ultralytics"
    target.mkdir(parents=True, exist_ok=True)
    src: Path | None = None
    for name in FONT_NAMES:
        dst = target / name
        if not dst.is_file():
            src = src or _font_source()
            shutil.copyfile(src, dst)
    # Some ultralytics versions look directly in the config dir.
    for name in FONT_NAMES:
        dst = config_dir / name
        if not dst.is_file():
            shutil.copyfile(target / name, dst)


def set_environment(config_dir: Path) -> None:
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    os.environ.setdefault("YOLO_VERBOSE", "False")


def load_ultralytics(config_dir: Path | None = None) -> ModuleType:
    """Configure offline operation, import ultralytics and return the module.

    Safe to call many times. If ultralytics was imported earlier by someone
    else, the settings are still updated, and a warning says the environment
    came too late to take effect at import.
    """
    cfg = (config_dir or default_config_dir()).resolve()
    cfg.mkdir(parents=True, exist_ok=True)
    if "ultralytics" in sys.modules and os.environ.get("YOLO_OFFLINE") != "1":
        logger.warning("ultralytics was imported before offline configuration")
    set_environment(cfg)
    place_fonts(cfg)
    import ultralytics
    from ultralytics.utils import SETTINGS

    SETTINGS.update(
        sync=False, clearml=False, comet=False, dvc=False, mlflow=False, raytune=False,
        tensorboard=False, wandb=False,
        weights_dir=str(cfg / "weights"), runs_dir=str(cfg / "runs"),
        datasets_dir=str(cfg / "datasets"),
    )
    return ultralytics
