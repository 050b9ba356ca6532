"""The pieces of a live stream that need no I/O: its buffer, frames, the resume window."""

from __future__ import annotations

import orjson

from corestone.events.log import LogWindow
from corestone.observability.health import HealthRegistry
from corestone.push.sse import HEARTBEAT, REVOKED, LiveStream, encode_frame


def _stream(ended: list[str], *, frames: int = 3, size: int = 1000) -> LiveStream:
    return LiveStream(
        7, "1", max_frames=frames, max_bytes=size, on_end=lambda s: ended.append(str(s.reason))
    )


def test_a_full_buffer_cuts_the_client_and_drops_what_it_held() -> None:
    """Past max_frames the stream ends as slow, its buffer emptied, later offers ignored."""
    ended: list[str] = []
    stream = _stream(ended)
    for position in (1, 2, 3):
        stream.offer(position, b"x")
    assert stream.buffered_bytes == 3
    stream.offer(4, b"x")
    assert ended == ["slow"]
    assert stream.buffered_bytes == 0
    assert stream.take() == b""
    stream.offer(5, b"x")
    assert stream.buffered_bytes == 0


def test_a_frame_over_the_byte_bound_cuts_the_client() -> None:
    """max_bytes bounds the buffer too, whatever the frame count."""
    ended: list[str] = []
    stream = _stream(ended, frames=100, size=10)
    stream.offer(1, b"12345")
    stream.offer(2, b"123456")
    assert ended == ["slow"]


def test_take_coalesces_and_skips_what_was_already_written() -> None:
    """Everything buffered comes out as one chunk; events at or below the position
    written (resumed and then received live) are skipped; heartbeats always pass."""
    stream = _stream([], frames=10)
    stream.position = 2
    for position, frame in ((2, b"a"), (0, HEARTBEAT), (3, b"b"), (3, b"b"), (4, b"c")):
        stream.offer(position, frame)
    assert stream.take() == HEARTBEAT + b"bc"
    assert stream.position == 4


def test_revoked_is_the_last_frame() -> None:
    """end() with a frame sends it after what is buffered; nothing offered later goes out."""
    ended: list[str] = []
    stream = _stream(ended, frames=10)
    stream.offer(1, b"a")
    stream.end("revoked", REVOKED)
    stream.offer(2, b"b")
    assert stream.take() == b"a" + REVOKED
    assert ended == ["revoked"]


def test_a_frame_carries_the_position_type_and_the_payload_as_data() -> None:
    """id is the position, event the type, data the event JSON on one line with
    ``payload`` named ``data``."""
    body = orjson.dumps({"id": "e", "type": "task.created", "payload": {"task_id": 3}}).decode()
    frame = encode_frame(12, "task.created", body)
    lines = frame.split(b"\n")
    assert lines[:2] == [b"id: 12", b"event: task.created"]
    assert orjson.loads(lines[2].removeprefix(b"data: ")) == {
        "id": "e",
        "type": "task.created",
        "data": {"task_id": 3},
    }
    assert frame.endswith(b"\n\n")
    assert frame.count(b"\n") == 4


def test_the_window_resumes_only_positions_it_still_holds() -> None:
    """Resumable: one before the oldest kept up to the newest; not older, not from the
    future, not negative; an empty outbox resumes only 0."""
    window = LogWindow(oldest=10, newest=20)
    assert [window.resumes(p) for p in (8, 9, 10, 20, 21, -1)] == [
        False,
        True,
        True,
        True,
        False,
        False,
    ]
    assert LogWindow(0, 0).resumes(0)
    assert not LogWindow(0, 0).resumes(5)


def test_shutting_down_calls_listeners_once_after_readiness_fails() -> None:
    """Listeners run when readiness already fails, once; a late listener runs at once;
    a removed one never does."""
    health = HealthRegistry()
    seen: list[bool] = []
    health.on_shutting_down(lambda: seen.append(health.shutting_down))
    remove = health.on_shutting_down(lambda: seen.append(False))
    remove()
    health.mark_shutting_down()
    health.mark_shutting_down()
    assert seen == [True]
    health.on_shutting_down(lambda: seen.append(True))
    assert seen == [True, True]
