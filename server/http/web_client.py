"""The browser client, served at `/` from `server/http/static/` (no build step, no CDN).

The files are read once, when the app is built, and served from memory: a fixed set of names
(the files of `static/` and of its subfolders, such as the ES modules in `static/js/`), so no
request path can reach any other file. Each carries an `ETag` (a hash of its bytes) and
`Cache-Control: no-cache`: with no build step there are no hashed names, so a browser keeps its
copy but asks with `If-None-Match` each time, gets `304` while the file is the same, and never
runs one new module beside a stale one after an upgrade. Every page and file carries a strict
Content Security Policy (scripts and styles only from this origin, never inline; WebSockets
only to this host), `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer`. `/favicon.ico`,
which browsers ask for whatever the page says, redirects to the page's own icon.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"
FAVICON = "favicon.svg"
_ENDPOINTS = frozenset({"web_client_index", "static"})
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# A Host header we are willing to echo into the policy: a DNS name or IP literal, and a port.
_HOST = re.compile(r"\A(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?\Z")


def content_security_policy(host: str | None) -> str:
    """The page's CSP; WebSockets are allowed to the host the page was loaded from only."""
    connect = "'self'"
    if host is not None and _HOST.match(host):
        # CSP Level 3 lets 'self' cover ws: and wss: on the same host; older browsers need these.
        connect += f" ws://{host} wss://{host}"
    return "; ".join(
        [
            "default-src 'self'",
            f"connect-src {connect}",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def load_static_files(directory: Path = STATIC_DIR) -> dict[str, tuple[bytes, str]]:
    """Path -> (content, content type) for every servable file in `directory` and below.

    Paths are relative and `/`-separated (`app.css`, `js/main.js`); hidden files and folders
    are left out.
    """
    files = {}
    for path in sorted(directory.rglob("*")) if directory.is_dir() else []:
        relative = path.relative_to(directory)
        content_type = _CONTENT_TYPES.get(path.suffix)
        hidden = any(part.startswith(".") for part in relative.parts)
        if path.is_file() and content_type is not None and not hidden:
            files[relative.as_posix()] = (path.read_bytes(), content_type)
    return files


def entity_tag(body: bytes) -> str:
    """A strong ETag for a static file: the same bytes, the same tag, across processes."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(if_none_match: str | None, tag: str) -> bool:
    if if_none_match is None:
        return False
    candidates = {candidate.strip().removeprefix("W/") for candidate in if_none_match.split(",")}
    return tag in candidates or "*" in candidates


def register_web_client(app: QuartTrio, directory: Path = STATIC_DIR) -> None:
    """Serve `index.html` at `/` and the other files at `/static/<name>` on `app`."""
    files = load_static_files(directory)
    tags = {name: entity_tag(body) for name, (body, _) in files.items()}

    def respond(name: str) -> Response:
        if name not in files:
            raise NotFound()
        body, content_type = files[name]
        if _matches(request.headers.get("If-None-Match"), tags[name]):
            response = Response(b"", status=304)
        else:
            response = Response(body, content_type=content_type)
        response.headers["ETag"] = tags[name]
        response.headers["Content-Security-Policy"] = content_security_policy(request.host)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def index() -> Response:
        return respond("index.html")

    async def static_file(filename: str) -> Response:
        return respond(filename)

    async def favicon() -> Response:
        if FAVICON not in files:
            raise NotFound()
        return Response("", status=301, headers={"Location": f"/static/{FAVICON}"})

    async def revalidated(response: Response) -> Response:
        # The API's after-request hook says `no-store` (its bodies carry tokens); hooks run in
        # reverse order of registration, so this one, registered first, has the last word on
        # the client's files, which carry neither.
        if request.endpoint in _ENDPOINTS and response.status_code in (200, 304):
            response.headers["Cache-Control"] = "no-cache"
        return response

    app.after_request(revalidated)
    app.add_url_rule("/", "web_client_index", index, methods=["GET"])
    app.add_url_rule("/favicon.ico", "web_client_favicon", favicon, methods=["GET"])
    # Quart registers `/static/<path:filename>` itself when the static folder exists: take it
    # over, so the security headers and the fixed file set apply there too.
    if "static" in app.view_functions:
        app.view_functions["static"] = static_file
    else:
        app.add_url_rule("/static/<path:filename>", "static", static_file, methods=["GET"])
