"""The demo's HTTP server (standard library): the page, a small JSON API and the generated files.

GET  /                       the page (src/demo/static/index.html; no CDN, works offline)
GET  /api/info               checkpoints, choices, defaults, examples
GET  /api/words?prompt=...   the instruments and metre a prompt names (stage 5's word lists)
POST /api/generate           the page's fields as JSON -> 202 {"id"} | 400 {"field", "error"}
GET  /api/jobs/<id>          state, queue position, progress (bars planned, segments rendered), result
GET  /files/<id>/<name>      a finished song's .mid/.wav/.json/.png (``?download=1`` to save it)
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from src.demo.app import DemoApp
from src.generation.song import RequestError

log = logging.getLogger("demo.http")
STATIC = Path(__file__).resolve().parent / "static"
TYPES = {".mid": "audio/midi", ".wav": "audio/wav", ".json": "application/json", ".png": "image/png"}
MAX_BODY = 64 * 1024


class Handler(BaseHTTPRequestHandler):
    app: DemoApp  # set on the subclass that make_server builds
    server_version = "hybrid-music-demo"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    # ------------------------------------------------------------------ replies
    def send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, obj: Any) -> None:
        self.send(status, json.dumps(obj).encode(), "application/json")

    def send_file(self, path: Path, download: bool) -> None:
        """The file, or the byte range asked for (so the audio player can seek)."""
        ctype = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"Accept-Ranges": "bytes"}
        if download:
            headers["Content-Disposition"] = f'attachment; filename="{path.name}"'
        body = path.read_bytes()
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if m and (m.group(1) or m.group(2)):
            first, last = m.group(1), m.group(2)
            start = int(first) if first else max(len(body) - int(last), 0)
            end = min(int(last), len(body) - 1) if first and last else len(body) - 1
            if start >= len(body) or start > end:
                return self.send(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", ctype, {"Content-Range": f"bytes */{len(body)}"}
                )
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            return self.send(HTTPStatus.PARTIAL_CONTENT, body[start : end + 1], ctype, headers)
        self.send(HTTPStatus.OK, body, ctype, headers)

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        if not parts:
            return self.send_file(STATIC / "index.html", False)
        if parts[0] == "static" and len(parts) == 2 and (STATIC / parts[1]).is_file():
            return self.send_file(STATIC / parts[1], False)
        if parts == ["api", "info"]:
            return self.send_json(HTTPStatus.OK, self.app.info())
        if parts == ["api", "words"]:
            prompt = parse_qs(url.query).get("prompt", [""])[0]
            return self.send_json(HTTPStatus.OK, self.app.prompt_words(prompt))
        if len(parts) == 3 and parts[:2] == ["api", "jobs"]:
            status = self.app.status(parts[2])
            if status is None:
                return self.send_json(HTTPStatus.NOT_FOUND, {"error": "no such song (finished songs are deleted)"})
            return self.send_json(HTTPStatus.OK, status)
        if len(parts) == 3 and parts[0] == "files":
            path = self.app.file(parts[1], parts[2])
            if path is None:
                return self.send_json(HTTPStatus.NOT_FOUND, {"error": "no such file (old songs are deleted)"})
            return self.send_file(path, "download" in parse_qs(url.query))
        self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no page {url.path}"})

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        if urlparse(self.path).path != "/api/generate":
            return self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self.send_json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
        try:
            fields = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(fields, dict):
                raise ValueError("not an object")
        except ValueError as e:
            return self.send_json(HTTPStatus.BAD_REQUEST, {"field": "", "error": f"the body is not JSON fields: {e}"})
        try:
            job = self.app.submit(fields)
        except RequestError as e:
            return self.send_json(HTTPStatus.BAD_REQUEST, {"field": e.field, "error": e.message})
        except (OverflowError, RuntimeError) as e:  # the queue is full; no checkpoint
            return self.send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"field": "", "error": str(e)})
        self.send_json(HTTPStatus.ACCEPTED, {"id": job.id})


def make_server(app: DemoApp, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    """A threading server bound to host:port (port 0: any free one) that serves ``app``."""
    handler = type("DemoHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
