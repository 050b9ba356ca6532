"""The webpush suite's push service: ``POST /p/<id>`` answers 201 Created, ``/ready`` 200.

It accepts every message without checking it (the tests' push service checks VAPID and
decrypts; here only the sender's cost matters), in its own process, so that serving
requests takes nothing from the event loop being measured.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import uvicorn

__all__ = ["app"]

_ids = itertools.count()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["method"] == "POST" and scope["path"].startswith("/p/"):
        status, headers = 201, [(b"location", f"/m/{next(_ids)}".encode())]
    elif scope["path"] == "/ready":
        status, headers = 200, []
    else:
        status, headers = 404, []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
