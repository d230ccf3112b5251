"""OHIF's built viewer (npm @ohif/app 3.13.2 ``dist/``) served from loopback, with
``/dicom-web`` proxied to an Orthanc DICOMweb plugin on the same origin (no CORS, no CDN).

``scripts/install-test-deps.sh`` unpacks the viewer into tests/viewer/ohif-dist (the
tarball's sha512 checked); nothing is downloaded at test time.
"""

from __future__ import annotations

import http.client
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

OHIF_DIST = Path(__file__).resolve().parent / "viewer" / "ohif-dist"

APP_CONFIG = """window.config = {
  routerBasename: null,
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  defaultDataSourceName: 'orthanc',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
    sourceName: 'orthanc',
    configuration: {
      friendlyName: 'Orthanc (test)',
      name: 'orthanc',
      wadoUriRoot: '/dicom-web',
      qidoRoot: '/dicom-web',
      wadoRoot: '/dicom-web',
      qidoSupportsIncludeField: false,
      imageRendering: 'wadors',
      thumbnailRendering: 'wadors',
      enableStudyLazyLoad: true,
      supportsFuzzyMatching: false,
      supportsWildcard: true,
      dicomUploadEnabled: false,
      bulkDataURI: { enabled: true },
      omitQuotationForMultipartRequest: true,
    },
  }],
};
"""


class ViewerMissing(RuntimeError):
    pass


def _handler(orthanc_port: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _proxy(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            conn = http.client.HTTPConnection("127.0.0.1", orthanc_port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "content-type")}
            conn.request(self.command, self.path, body=body, headers=headers)
            rsp = conn.getresponse()
            data = rsp.read()
            self.send_response(rsp.status)
            for k, v in rsp.getheaders():
                if k.lower() in ("content-type",):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            conn.close()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path.startswith("/dicom-web/"):
                self._proxy()
                return
            if path == "/app-config.js":
                self._send(200, APP_CONFIG.encode(), "application/javascript")
                return
            file = (OHIF_DIST / path.lstrip("/")).resolve()
            if not file.is_file() or OHIF_DIST.resolve() not in file.parents:
                file = OHIF_DIST / "index.html"  # client-side routes
            ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            if file.suffix == ".wasm":
                ctype = "application/wasm"
            self._send(200, file.read_bytes(), ctype)

        def do_POST(self) -> None:
            self._proxy()

    return Handler


class ViewerServer:
    """The viewer on a free loopback port; stop() shuts it down."""

    def __init__(self, orthanc_port: int) -> None:
        if not (OHIF_DIST / "index.html").is_file():
            raise ViewerMissing("tests/viewer/ohif-dist is missing: run scripts/install-test-deps.sh")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(orthanc_port))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ViewerServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
