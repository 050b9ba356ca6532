"""taskboard's browser page: ``/``, its scripts and styles under ``/static/``, and ``/sw.js``.

The page is plain HTML, ES modules and CSS shipped inside the package (``taskboard/web``),
with no build step and nothing fetched from another host (ADR 0036). Only the files named
in :data:`ASSETS` are served, so no request path ever reaches the file system.

Every file is read once, the first time it is asked for, and answered from memory with a
strong ETag (its content hash) and ``Cache-Control: no-cache``: a browser revalidates on
each load and gets a 304 while the file is unchanged, so an upgrade is seen at once
without renaming files. Every answer carries a strict Content-Security-Policy (scripts,
styles, connections and workers from this origin only, no inline code), so text a user
wrote can never run as script even if a bug put it into markup.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Final

from fastapi import APIRouter, Header, Path, Response

from corestone import NotFoundError

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "IfNoneMatch", "router", "web_file"]

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
"""What the page may load: its own origin only, and no inline script or style."""

ASSETS: Final[dict[str, str]] = {
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "bell.js": "text/javascript; charset=utf-8",
    "board.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
    "push.js": "text/javascript; charset=utf-8",
    "stream.js": "text/javascript; charset=utf-8",
}
"""The files under ``/static/`` and their content types; any other name is a 404."""

_PAGE = "index.html"
_WORKER = "sw.js"
_HTML = "text/html; charset=utf-8"
_JS = "text/javascript; charset=utf-8"
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class _Asset:
    """One file of the page, read into memory, with its strong ETag."""

    body: bytes
    media_type: str
    etag: str


_LOADED: dict[str, _Asset] = {}


def _asset(name: str, media_type: str) -> _Asset:
    """The file ``name`` of the package's ``web`` folder, read the first time it is asked for."""
    found = _LOADED.get(name)
    if found is None:
        body = resources.files("taskboard").joinpath("web", *name.split("/")).read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:32]
        found = _Asset(body, media_type, f'"{digest}"')
        _LOADED[name] = found
    return found


def _answer(
    asset: _Asset, if_none_match: str | None, extra: dict[str, str] | None = None
) -> Response:
    """``asset`` with its headers, or an empty 304 when the browser already holds it."""
    headers = {**_SECURITY_HEADERS, "ETag": asset.etag, **(extra or {})}
    if if_none_match is not None and _matches(if_none_match, asset.etag):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match list names ``etag`` (weak comparison, RFC 9110 §13.1.2)."""
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def web_file(name: str, media_type: str, if_none_match: str | None) -> Response:
    """The file ``name`` (a path under the package's ``web`` folder, named by code, never by
    a request) with the page's headers: CSP, strong ETag, 304 when the browser has it."""
    return _answer(_asset(name, media_type), if_none_match)


IfNoneMatch = Annotated[str | None, Header(include_in_schema=False)]

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page(if_none_match: IfNoneMatch = None) -> Response:
    """The page itself."""
    return _answer(_asset(_PAGE, _HTML), if_none_match)


@router.get("/sw.js")
async def service_worker(if_none_match: IfNoneMatch = None) -> Response:
    """The service worker, at the root so that its scope may be the whole origin."""
    return _answer(_asset(_WORKER, _JS), if_none_match, {"Service-Worker-Allowed": "/"})


@router.get("/static/{name}")
async def static(
    name: Annotated[str, Path(max_length=64)], if_none_match: IfNoneMatch = None
) -> Response:
    """One of :data:`ASSETS`; any other name is a 404 problem."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundError("no such file")
    return _answer(_asset(name, media_type), if_none_match)
