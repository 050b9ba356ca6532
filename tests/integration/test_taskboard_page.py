"""taskboard's page is served from the package with a strict CSP, revalidated caching, and
nothing from another host (issue 15, item 4)."""

from __future__ import annotations

import re
from importlib import resources
from urllib.parse import urlsplit

import pytest

from taskboard.api.page import ASSETS, CONTENT_SECURITY_POLICY
from tests.integration.conftest import Board

PAGES = ["/", "/sw.js", *(f"/static/{name}" for name in ASSETS)]
# URIs that name an XML namespace: identifiers a parser compares, never fetched.
NAMESPACES = {"http://www.w3.org/2000/svg"}


def _web_files() -> set[str]:
    return {entry.name for entry in resources.files("taskboard").joinpath("web").iterdir()}


async def test_the_page_and_its_files_have_their_types_and_a_strict_csp(board: Board) -> None:
    """Each file answers 200 with its own content type, the CSP, nosniff and no-cache."""
    expected = {"/": "text/html", "/sw.js": "text/javascript"}
    for path in PAGES:
        response = await board.client.get(path)
        assert response.status_code == 200, path
        media_type = ASSETS.get(path.removeprefix("/static/")) or expected[path]
        assert response.headers["content-type"].startswith(media_type.split(";")[0]), path
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY
        assert "unsafe" not in CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-cache"
        assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["etag"]), path


async def test_a_file_the_browser_holds_is_a_304_and_a_changed_one_is_sent(board: Board) -> None:
    """If-None-Match with the ETag (strong, weak or in a list) is an empty 304; another is 200."""
    for path in PAGES:
        etag = (await board.client.get(path)).headers["etag"]
        for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            held = await board.client.get(path, headers={"If-None-Match": sent})
            assert held.status_code == 304, (path, sent)
            assert held.content == b""
            assert held.headers["etag"] == etag
        changed = await board.client.get(path, headers={"If-None-Match": '"stale"'})
        assert changed.status_code == 200
        assert changed.content


async def test_the_service_worker_may_control_the_whole_site(board: Board) -> None:
    """/sw.js says Service-Worker-Allowed: / so a registration's scope can be the root."""
    response = await board.client.get("/sw.js")
    assert response.headers["service-worker-allowed"] == "/"
    assert b"showNotification" in response.content


@pytest.mark.parametrize(
    "path",
    [
        "/static/page.py",
        "/static/index.html",
        "/static/sw.js",
        "/static/..%2fapi%2fpage.py",
        "/static/%2e%2e%2f__init__.py",
        "/static/",
        "/static/app.js/x",
    ],
)
async def test_only_the_named_files_are_served(board: Board, path: str) -> None:
    """Any other name under /static/ is a 404, never a file read from the package."""
    response = await board.client.get(path)
    assert response.status_code == 404, path
    assert "import" not in response.text


async def test_every_file_of_the_page_is_served_and_every_served_file_exists() -> None:
    """The web folder holds exactly the page, the worker and the named assets."""
    assert _web_files() == {"index.html", "sw.js", "ops", *ASSETS}


async def test_nothing_is_loaded_from_another_host(board: Board) -> None:
    """No file names an http(s) URL to load, imports a module from outside /static/, or
    runs inline script or style (the CSP would refuse them: the page must not need them)."""
    for path in PAGES:
        text = (await board.client.get(path)).text
        for url in re.findall(r"""(?:https?:)?//[^\s"'`)<>]+""", text):
            if url in NAMESPACES or not url.startswith(("http:", "https:", "//")):
                continue
            # A comment's "//" is not a URL; anything with a host is.
            if urlsplit(url if url.startswith("http") else "https:" + url).hostname:
                raise AssertionError(f"{path} names {url}")
        for specifier in re.findall(r"""\bfrom\s+["']([^"']+)["']""", text):
            assert specifier.startswith("./"), (path, specifier)
        assert "@import" not in text
        assert not re.search(r"url\((?!['\"]?/)", text), path

    html = (await board.client.get("/")).text
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts
    assert all('src="/static/' in tag for tag in scripts)
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    for reference in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert reference.removeprefix("/static/") in ASSETS, reference
