"""What a link that ends takes with it is handed back to anti-entropy: an update the push loop took
off the queue but had not sent yet, a document evicted between load and handle, answers a slow store
held back. Each of these, before, reached the peer only when the slow backstop sweep came round."""

from __future__ import annotations

import asyncio
import dataclasses

from edge.config import Peer
from edge.sync import SyncHub, _Link
from tests.support.edges import FAST


class _SilentWs:
    """A websocket that sends nothing anywhere (the link's transport is not under test)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def send_bytes(self, data: bytes) -> None:
        self.frames.append(data)

    async def close(self) -> None:
        pass


def _hub(**limits: float) -> SyncHub:
    return SyncHub(
        "eu", (Peer("us", "http://127.0.0.1:9"),), "t", None, dataclasses.replace(FAST, **limits), None, None
    )  # type: ignore[arg-type]  # nothing started: no state, metrics or hint handler needed


async def test_an_update_taken_off_the_queue_and_not_sent_when_the_link_ends_is_handed_back():
    """The push loop takes the first update, then waits `sync_push_interval_s` to batch more: a link
    that ends meanwhile cancels it with the update neither queued nor recorded as sent."""
    hub = _hub(sync_push_interval_s=5.0)
    link = _Link("us", _SilentWs(), queue_max=10, level=2)
    sender = asyncio.create_task(hub._send_loop(link))
    link.queue.put_nowait(("session/p1/g1", b"update"))
    for _ in range(100):  # bounded: the loop takes it at its next turn
        await asyncio.sleep(0)
        if link.queue.empty():
            break
    assert link.queue.empty()
    sender.cancel()
    await asyncio.gather(sender, return_exceptions=True)
    assert link.recently_sent(0.0) == ["session/p1/g1"]
