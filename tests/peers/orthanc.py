"""Orthanc as the PACS peer."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import httpx

from peers._base import (
    LOOPBACK,
    PathLike,
    PeerError,
    START_TIMEOUT,
    _Peer,
    _Process,
    _require_binary,
    _start_with_retries,
    _tail,
    free_port,
    listens_on,
    wait_until,
)
from peers.dcmtk import dcmtk_env


class OrthancServer(_Peer):
    """Orthanc 1.10 as the PACS, with its own JSON config, ports and storage.

    ``modalities`` maps a name to ``(ae_title, host, port)`` for ``DicomModalities``.
    No plugins are loaded (the Debian config folder is not read), HTTP is loopback-only
    without authentication, every calling AE may store, the called AE is not checked.
    ``OverwriteInstances`` is on, so a re-sent SOP instance replaces the stored one.
    ``extra_config`` entries override the generated config.
    """

    name = "orthanc"

    def __init__(
        self,
        workdir: PathLike | None = None,
        ae_title: str = "ORTHANC",
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        extra_config: Mapping[str, Any] | None = None,
        dicom_port: int | None = None,
    ) -> None:
        super().__init__(workdir)
        self.ae_title = ae_title
        self.modalities = dict(modalities or {})
        self.extra_config = dict(extra_config or {})
        #: A fixed DICOM port (a destination that comes up late); None: a free one.
        self.fixed_dicom_port = dicom_port
        self.dicom_port = 0
        self.http_port = 0
        self._binary = _require_binary("/usr/sbin/Orthanc", "orthanc")
        self._client: httpx.Client | None = None

    @property
    def port(self) -> int:
        """The DICOM port (alias of ``dicom_port``)."""
        return self.dicom_port

    @property
    def destination(self) -> str:
        """``AE@127.0.0.1:DICOM_PORT``, the form of the node's ``DESTINATIONS`` setting."""
        return f"{self.ae_title}@{LOOPBACK}:{self.dicom_port}"

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "orthanc.json"

    def config(self) -> dict[str, Any]:
        """The JSON configuration this instance runs with."""
        storage = str(self.workdir / "storage")
        config: dict[str, Any] = {
            "Name": self.ae_title,
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpDescribeErrors": True,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAssociationCloseDelay": 0,
            "DicomModalities": {
                name: [ae, host, port] for name, (ae, host, port) in self.modalities.items()
            },
            "OverwriteInstances": True,
            "SaveJobs": False,
            "DeidentifyLogs": True,
            "StorageCompression": False,
        }
        config.update(self.extra_config)
        return config

    def start(self) -> Self:
        _start_with_retries(self._start_once, fixed_port=self.fixed_dicom_port is not None)
        return self

    def _start_once(self, fresh_port: bool) -> None:
        self.dicom_port, self.http_port = self.fixed_dicom_port or free_port(), free_port()
        while self.http_port == self.dicom_port:
            self.http_port = free_port()
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        orthanc_log = self.workdir / "orthanc-verbose.log"
        argv = [self._binary, "--verbose", f"--logfile={orthanc_log}", "--no-jobs",
                str(self.config_path)]
        # Orthanc's DICOM stack is DCMTK: without TCP_NODELAY every C-STORE it sends
        # waits ~40 ms for a delayed ACK.
        proc = _Process("Orthanc", argv, self.log_path, env=dcmtk_env(), cwd=self.workdir)
        self._proc = proc

        def ready() -> bool:
            proc.check_alive()
            return (listens_on(proc.pid, self.http_port) and listens_on(proc.pid, self.dicom_port)
                    and self._system_ok())

        try:
            wait_until(ready, START_TIMEOUT, interval=0.1,
                       what=f"Orthanc /system on port {self.http_port}")
        except (TimeoutError, PeerError) as exc:
            self.stop()
            raise PeerError(f"Orthanc failed to start: {exc}\nverbose log {orthanc_log}:\n"
                            f"{_tail(orthanc_log)}") from exc

    def _system_ok(self) -> bool:
        try:
            return self.client.get("/system", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def stop(self) -> None:
        """Graceful stop (SIGTERM; Orthanc 1.10 takes about 2 s to stop its HTTP server)."""
        self._close_client()
        super().stop()

    def kill(self) -> None:
        self._close_client()
        super().kill()

    def close(self) -> None:
        """SIGKILL (the instance is thrown away, a graceful stop only costs time)."""
        self.kill()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def client(self) -> httpx.Client:
        """An httpx client on the REST API (proxy environment ignored)."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, timeout=60, trust_env=False)
        return self._client

    # -- REST helpers ----------------------------------------------------------------

    def _checked(self, response: httpx.Response) -> Any:
        if response.is_error:
            raise PeerError(f"Orthanc {response.request.method} {response.request.url.path} "
                            f"-> {response.status_code}: {response.text[:2000]}")
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def rest_get(self, path: str) -> Any:
        """GET; parsed JSON, or bytes for other content types."""
        return self._checked(self.client.get(path))

    def rest_post(self, path: str, json: Any = None, content: bytes | None = None) -> Any:
        """POST a JSON body or raw bytes; parsed JSON, or bytes for other content types."""
        if content is not None:
            return self._checked(self.client.post(path, content=content))
        return self._checked(self.client.post(path, json=json))

    def rest_delete(self, path: str) -> Any:
        return self._checked(self.client.delete(path))

    def upload(self, path_or_bytes: PathLike | bytes) -> str:
        """Store one DICOM file (POST /instances); return the Orthanc instance ID."""
        data = (path_or_bytes if isinstance(path_or_bytes, bytes)
                else Path(path_or_bytes).read_bytes())
        answer = self.rest_post("/instances", content=data)
        return str(answer["ID"])

    def instances(self) -> list[str]:
        """Orthanc IDs of all stored instances."""
        return list(self.rest_get("/instances"))

    def studies(self) -> list[str]:
        """Orthanc IDs of all stored studies."""
        return list(self.rest_get("/studies"))

    def series(self) -> list[str]:
        """Orthanc IDs of all stored series."""
        return list(self.rest_get("/series"))

    def download(self, instance_id: str) -> bytes:
        """The stored DICOM file of an instance."""
        response = self.client.get(f"/instances/{instance_id}/file")
        self._checked(response)
        return response.content

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """``/instances/{id}/simplified-tags`` (keyword -> value)."""
        return dict(self.rest_get(f"/instances/{instance_id}/simplified-tags"))

    def find_by_study_uid(self, study_uid: str) -> list[str]:
        """Orthanc study IDs whose StudyInstanceUID is ``study_uid`` (0 or 1 of them)."""
        query = {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
        return list(self.rest_post("/tools/find", json=query))

    def study_instances(self, study_uid: str) -> list[str]:
        """Orthanc instance IDs of the study with this StudyInstanceUID."""
        ids: list[str] = []
        for study_id in self.find_by_study_uid(study_uid):
            ids.extend(item["ID"] for item in self.rest_get(f"/studies/{study_id}/instances"))
        return ids

    def wait_for_instances(self, count: int, timeout: float = 30) -> list[str]:
        """Wait until Orthanc holds at least ``count`` instances; return their IDs."""
        if count <= 0:
            return self.instances()

        def enough() -> list[str]:
            ids = self.instances()
            return ids if len(ids) >= count else []

        return wait_until(enough, timeout, interval=0.1, what=f"{count} instances in Orthanc")

    def echo_modality(self, modality_name: str) -> None:
        """C-ECHO from Orthanc to a configured modality; raises on failure."""
        self.rest_post(f"/modalities/{modality_name}/echo", json={})

    def store_to_modality(self, modality_name: str, resource_ids: Sequence[str]) -> Any:
        """C-STORE resources (any level) to a configured modality, synchronously."""
        body = {"Resources": list(resource_ids), "Synchronous": True}
        return self.rest_post(f"/modalities/{modality_name}/store", json=body)
