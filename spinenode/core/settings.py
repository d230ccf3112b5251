"""The node's one settings object (environment ``SPINENODE_*`` or a TOML file).

Built once in the entry point and passed down; nothing reads the environment
elsewhere. A bad value raises :class:`~spinenode.core.errors.ConfigError` with one
line that names the setting, which the CLI prints before exiting.
"""

from __future__ import annotations

import difflib
import logging
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from spinenode.core.destinations import DIMSE, URL_SCHEMES, scheme_of
from spinenode.core.errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "SPINENODE_"
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII without backslash
_DEST_RE = re.compile(
    r"^(?P<ae>[^@]{1,16})@(?P<host>[^:@;]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})(?P<opts>(;[a-z]+(=[a-z0-9+]+)?)*)$"
)
#: Per-destination options after the port, e.g. ``PACS@10.0.0.5:2762;tls;ts=explicit+deflate``.
DESTINATION_OPTIONS = frozenset({"tls", "ts"})
#: Names for ``;ts=NAME+NAME...``: the transfer syntaxes export proposes to that
#: destination, in this order, instead of Explicit then Implicit VR Little Endian.
TRANSFER_SYNTAX_NAMES: dict[str, str] = {
    "explicit": "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "implicit": "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "deflate": "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "bigendian": "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
}
# DESTINATIONS given as URLs: the scheme chooses the exporter (the registry in
# spinenode/core/destinations.py); ``AE@HOST:PORT`` (no scheme) is DIMSE C-STORE.
_URL_DEST_RE = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>[^/\s:]+|\[[0-9a-fA-F:]+\])(:\d{1,5})?(/\S*)?$")


def validate_destination(text: str) -> str:
    """``AE@HOST:PORT[;tls][;ts=NAME+NAME]`` or a URL with one of :data:`~spinenode.core.destinations.URL_SCHEMES`."""
    text = text.strip()
    if scheme_of(text) == DIMSE:
        return str(Destination.parse(text))
    m = _URL_DEST_RE.match(text)
    if not m or m["scheme"] not in URL_SCHEMES:
        schemes = ", ".join(sorted(URL_SCHEMES))
        raise ValueError(f"{text!r} is neither AE@HOST:PORT[;tls] nor a URL with scheme {schemes}")
    return text.rstrip("/")


def validate_ae_title(value: str) -> str:
    """Return ``value`` stripped if it is a valid AE title (1-16 chars, no backslash)."""
    stripped = value.strip()
    if not stripped or not _AE_RE.match(stripped):
        raise ValueError(f"{value!r} is not a valid AE title (1-16 printable characters, no '\\')")
    return stripped


@dataclass(frozen=True, slots=True)
class Destination:
    """A DICOM peer given as ``AE@HOST:PORT``."""

    ae_title: str
    host: str
    port: int
    tls: bool = False
    #: transfer syntax UIDs to propose (``;ts=``), in order; empty: export's default
    transfer_syntaxes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Destination:
        m = _DEST_RE.match(text.strip())
        if not m:
            raise ValueError(f"{text!r} is not of the form AE@HOST:PORT[;tls][;ts=NAME+NAME]")
        port = int(m["port"])
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} out of range in {text!r}")
        opts = dict(o.partition("=")[::2] for o in m["opts"].split(";") if o)
        unknown = set(opts) - DESTINATION_OPTIONS
        if unknown or opts.get("tls", "") != "":
            raise ValueError(f"unknown destination option(s) {', '.join(sorted(unknown or {'tls='}))} in {text!r}")
        names = [n for n in opts.get("ts", "").split("+") if n] if "ts" in opts else []
        bad = [n for n in names if n not in TRANSFER_SYNTAX_NAMES]
        if "ts" in opts and (not names or bad or len(set(names)) != len(names)):
            raise ValueError(f"ts= takes distinct names from {', '.join(TRANSFER_SYNTAX_NAMES)} joined by '+', "
                             f"in {text!r}")
        return cls(validate_ae_title(m["ae"]), m["host"].strip("[]"), port, "tls" in opts,
                   tuple(TRANSFER_SYNTAX_NAMES[n] for n in names))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        names = {uid: n for n, uid in TRANSFER_SYNTAX_NAMES.items()}
        ts = ";ts=" + "+".join(names[u] for u in self.transfer_syntaxes) if self.transfer_syntaxes else ""
        return f"{self.ae_title}@{host}:{self.port}" + (";tls" if self.tls else "") + ts


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """All settings of the node; names match ``SPINENODE_<NAME>`` in upper case."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, extra="forbid", frozen=True
    )

    ae_title: str = "SPINENODE"
    dicom_host: str = "0.0.0.0"
    dicom_port: int = Field(11112, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Path("./spinenode-data")
    database_url: str = ""
    broker_url: str = ""
    stable_seconds: float = Field(60.0, gt=0)
    allowed_calling_aes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    destinations: Annotated[list[str], NoDecode] = Field(default_factory=list)
    admin_token: str = ""
    #: Bearer token of the workers on the node's DICOMweb routes (/dicom-web); empty = routes off.
    worker_token: str = ""
    #: Where a worker reaches the node's DICOMweb routes (e.g. https://node:8080) when the
    #: files are not on its own DATA_DIR; empty = a shared (or the same) DATA_DIR only.
    node_url: str = ""
    #: Bytes of fetched series a worker keeps under DATA_DIR/cache (least recently used go first).
    worker_cache_mb: float = Field(2048.0, ge=0)
    #: An analysis worker takes up to this many QUEUED studies in one batched analyzer pass
    #: (the one its message names plus others already waiting; never waits for more).
    analyze_batch: int = Field(4, ge=1, le=64)
    #: Serve the admin HTTP (and /dicom-web) over TLS with TLS_CERT/TLS_KEY.
    http_tls: bool = False
    #: Read-only access (optional); with it set, every read (pages, /api/*, /metrics,
    #: OpenAPI) needs it or ADMIN_TOKEN. /api/health stays open.
    viewer_token: str = ""
    #: Bearer token that may read /metrics only (a Prometheus scrape job); optional.
    metrics_token: str = ""
    #: Seconds a dashboard login lasts; /logout ends it earlier.
    session_max_age: float = Field(43200.0, gt=0, le=30 * 86400)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    # DICOM association limits
    max_associations: int = Field(16, ge=1, le=512)
    #: At most this many associations from one IP address (0 = MAX_ASSOCIATIONS).
    max_associations_per_address: int = Field(8, ge=0, le=512)
    #: The last this-many free slots go only to an address that holds none yet.
    reserved_associations: int = Field(4, ge=0, le=512)
    #: Seconds to wait for an A-ASSOCIATE-RQ after a connection opens.
    acse_timeout: float = Field(10.0, gt=0)
    dimse_timeout: float = Field(60.0, gt=0)
    #: Idle timeout: an association that receives nothing this long is aborted.
    network_timeout: float = Field(20.0, gt=0)
    #: Largest P-DATA-TF PDU the node advertises; a longer one aborts the association (0 = none).
    max_pdu: int = Field(131072, ge=0)
    #: Node-wide cap on bytes of data sets being received (0 = no cap); over it: 0xA700.
    max_inflight_mb: float = Field(4096.0, ge=0)
    scp_processes: int = Field(1, ge=1, le=32)
    #: Group commit: concurrent C-STOREs of one receiver process share their directory
    #: fsyncs and one index transaction (``scp_node.group_commit``); off: one of each per instance.
    group_commit: bool = True
    #: Longest a round waits for C-STOREs already being stored in other threads (ms).
    group_commit_window_ms: float = Field(2.0, ge=0, le=1000)
    #: Most instances in one round.
    group_commit_max: int = Field(32, ge=1, le=1024)

    # DICOM TLS: a second listener on DICOM_TLS_PORT (0 = none) with TLS_CERT/TLS_KEY;
    # TLS_CA, when set, is the trust store for peers (client certificates are then
    # required by the listener, and it verifies the PACS for ";tls" destinations).
    dicom_tls_port: int = Field(0, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    # export to DESTINATIONS: exponential backoff base * 2**(attempt-1), capped
    export_retry_base: float = Field(30.0, gt=0)
    export_retry_max: float = Field(600.0, gt=0)
    export_max_attempts: int = Field(30, ge=1)
    export_timeout: float = Field(30.0, gt=0)

    # disk safety and retention
    disk_min_free_mb: float = Field(1024.0, ge=0)
    retention_days: float = Field(7.0, ge=0)

    # workers: a gpu-queue worker loads the models and analyses one phantom study at start,
    # so the first real study is not the slow one (workers/warmup.py)
    worker_warmup: bool = True
    # the herniation/HIZ model (models/weights, herniation 0.2.0) meets its three bars on 200
    # fresh phantoms (type kappa 0.86, position 0.96, HIZ F1 0.87: MODEL_CARD.md)
    herniation_model: bool = True

    # scheduler
    sweep_interval: float = Field(1.0, gt=0)
    requeue_after: float = Field(900.0, gt=0)
    eligibility_rules: Path | None = None
    #: Seconds one stage task (analyze, encode, export) may work before it stops and the
    #: study is FAILED(stage) (0 = no limit); below REQUEUE_AFTER (workers/timelimit.py).
    task_soft_time_limit: float = Field(600.0, ge=0)

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return validate_ae_title(v)

    @field_validator("allowed_calling_aes", mode="before")
    @classmethod
    def _calling(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("allowed_calling_aes")
    @classmethod
    def _calling_valid(cls, v: list[str]) -> list[str]:
        return [validate_ae_title(x) for x in v]

    @field_validator("destinations", mode="before")
    @classmethod
    def _dest(cls, v: Any) -> Any:
        return _split_list(v)

    @field_validator("destinations")
    @classmethod
    def _dest_valid(cls, v: list[str]) -> list[str]:
        return [validate_destination(x) for x in v]

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("database_url", "broker_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and "://" not in v:
            raise ValueError(f"{v!r} is not a URL")
        return v

    @field_validator("node_url")
    @classmethod
    def _node_url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if v and not re.match(r"^https?://[^/\s]+(/\S*)?$", v):
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _tls(self) -> Settings:
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name.upper()} {path} is not a readable file")
        if self.dicom_tls_port and not (self.tls_cert and self.tls_key):
            raise ValueError("DICOM_TLS_PORT needs TLS_CERT and TLS_KEY")
        if self.http_tls and not (self.tls_cert and self.tls_key):
            raise ValueError("HTTP_TLS needs TLS_CERT and TLS_KEY")
        return self

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        data_dir = self.data_dir.expanduser().resolve()
        object.__setattr__(self, "data_dir", data_dir)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{data_dir / 'spinenode.db'}")
        return self

    # derived values ---------------------------------------------------------
    @property
    def destination_list(self) -> list[Destination]:
        """The DIMSE destinations (those given as ``AE@HOST:PORT``)."""
        return [Destination.parse(d) for d in self.destinations if scheme_of(d) == DIMSE]

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def incoming_dir(self) -> Path:
        return self.data_dir / "incoming"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    def to_env(self) -> dict[str, str]:
        """The settings as ``SPINENODE_*`` variables, for child processes."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            text = ",".join(value) if isinstance(value, list) else str(value)
            env[f"{ENV_PREFIX}{name.upper()}"] = text
        return env


def _read_toml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings in a TOML file by lower-case name, and each name as the file spells it."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    if "spinenode" in raw and len(raw) > 1:
        stray = ", ".join(sorted(str(k) for k in raw if k != "spinenode"))
        raise ConfigError(f"config file {path} has settings both at top level ({stray}) and under "
                          "[spinenode]: put them all in one place")
    section = raw.get("spinenode", raw)
    return {str(k).lower(): v for k, v in section.items()}, {str(k).lower(): str(k) for k in section}


#: ``SPINENODE_*`` variables that are read elsewhere, not settings.
OTHER_ENV = frozenset({"yolo_dir"})


def env_names(environ: Mapping[str, str]) -> set[str]:
    """The lower-case names of the ``SPINENODE_*`` variables, without the prefix."""
    return {k[len(ENV_PREFIX):].lower() for k in environ if k.upper().startswith(ENV_PREFIX)}


def _warn_unknown_env(names: set[str]) -> None:
    """A warning for each name that is neither a setting nor in :data:`OTHER_ENV`."""
    for name in sorted(names - set(Settings.model_fields) - OTHER_ENV):
        close = difflib.get_close_matches(name, list(Settings.model_fields), n=1)
        hint = f"; did you mean {ENV_PREFIX}{close[0].upper()}?" if close else ""
        log.warning("%s%s is not a setting and is ignored%s", ENV_PREFIX, name.upper(), hint)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from a TOML file (optional), the environment and overrides.

    Precedence: overrides > environment > file > defaults.

    Raises
    ------
    ConfigError
        With one line naming the first bad setting.
    """
    import os

    file_values, spelled = _read_toml(config) if config else ({}, {})
    in_env = env_names(os.environ)
    _warn_unknown_env(in_env)
    init = {k: v for k, v in file_values.items() if k not in in_env}
    init.update(overrides)
    try:
        return Settings(**init)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        if name in file_values and name not in in_env and name not in overrides:
            where = f"{spelled[name]} in {config}"  # the key as the file spells it
        elif name in Settings.model_fields:
            where = f"{ENV_PREFIX}{name.upper()}"
        else:
            where = name
        raise ConfigError(f"invalid setting {where}: {err['msg']}") from None
