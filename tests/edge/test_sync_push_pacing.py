"""Live pushes are paced per link: at most one frame per `sync_push_interval_s`. An idle link sends
an update at once; updates that queue within the window after a frame go out together in the
next one (docs/decisions/live-pushes-paced-per-link.md)."""

from __future__ import annotations

import asyncio
import time

from edge.crdt import protocol
from edge.sync import _Link
from tests.support.edges import SilentWs, bare_hub
from tests.support.polling import wait_for

WINDOW_S = 0.2


def _docs(frame: bytes) -> list[str]:
    return [name for name, _ in protocol.decode_frame(frame, protocol.Limits())]


async def test_an_idle_link_pushes_at_once_and_a_busy_one_gathers_the_window_into_one_frame():
    hub = bare_hub(sync_push_interval_s=WINDOW_S)
    ws = SilentWs()
    link = _Link("us", ws, queue_max=100, level=2)
    sender = asyncio.create_task(hub._send_loop(link))
    try:
        queued = time.monotonic()
        link.queue.put_nowait(("session/p1/g1", protocol.update_message(b"\x00\x00")))
        await wait_for(lambda: len(ws.frames) >= 1)
        assert ws.frames[0][0] - queued < WINDOW_S / 2, "an idle link does not wait for the window"
        for game in ("g2", "g3", "g4"):  # within the window after that frame
            link.queue.put_nowait((f"session/p1/{game}", protocol.update_message(b"\x00\x00")))
            await asyncio.sleep(0.01)
        await wait_for(lambda: len(ws.frames) >= 2)
        await asyncio.sleep(WINDOW_S / 2)
        assert len(ws.frames) == 2, "one frame for the three updates"
        sent_at, frame = ws.frames[1]
        assert sent_at - ws.frames[0][0] >= WINDOW_S * 0.9, "the next frame waited for the window"
        assert _docs(frame) == ["session/p1/g2", "session/p1/g3", "session/p1/g4"]
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
