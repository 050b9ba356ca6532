"""The live stream under a hostile review: odd resume ids, many streams of one user."""

from __future__ import annotations

from tests.integration.live.conftest import Cluster, SseReader


async def test_a_non_ascii_digit_resume_id_gets_reset_not_a_500(cluster: Cluster) -> None:
    """``²`` and ``١٢`` are digits to str.isdigit(); int() refuses the first and reads the
    second as 12. Either is garbage from a client: the stream opens with `reset`, and no
    stream is left behind by a failed open."""
    one = await cluster.instance()
    _, ada = await one.signup()
    ws = await one.workspace(ada)
    path = f"/api/workspaces/{ws}/events"
    for last in ("²", "١٢", "1²"):
        request = one.client.build_request("GET", path, params={"last_event_id": last}, headers=ada)
        response = await one.client.send(request, stream=True)
        try:
            assert response.status_code == 200, (last, response.status_code)
            reader = SseReader(response)
            assert (await reader.next()) is not None  # retry
            frame = await reader.event()
            assert frame is not None
            assert frame.event == "reset", last
        finally:
            await response.aclose()
