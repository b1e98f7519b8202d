"""In-process edges: a game_server token and a peer token rotated by editing the config file,
picked up by the file watch without a restart; an open sync link whose credential was removed is
closed and cannot come back with it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from shared.auth import hash_token
from shared.web import REGISTRY_KEY

from edge.app_keys import HUB
from tests.support.edges import GS, peer_token
from tests.support.polling import eventually


def tokens_toml(path: Path, rows: list[tuple[str, str, str]]) -> None:
    text = "[edge]\n" + "".join(
        f'[[tokens]]\nname = "{n}"\nrole = "{r}"\nsha256 = "{hash_token(t)}"\n' for n, r, t in rows
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def test_a_rotated_game_server_token_and_a_removed_peer_token_take_effect_without_restart(
    tmp_path, edges
) -> None:
    e = await edges("a", "b")
    config = tmp_path / "edge-b.toml"
    rows = [("gs", "game_server", GS), ("a", "peer", peer_token("a"))]
    tokens_toml(config, rows)
    await e.stop("b")
    server = await e.start("b", config_path=config, credentials_check_interval_s=0.05)
    hub = server.app[HUB]

    async def linked() -> bool:
        return "a" in hub.links

    await eventually(linked)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

        async def status(token: str) -> int:
            async with http.get(e.url("b") + "/v1/jackpots", headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status

        assert (await status(GS), await status("gs-new")) == (200, 401)
        tokens_toml(config, [("gs", "game_server", "gs-new"), *rows[1:]])

        async def rotated() -> bool:
            return (await status(GS), await status("gs-new")) == (401, 200)

        await eventually(rotated)
        assert "a" in hub.links  # the peer's credential did not change: its link stays

        tokens_toml(config, [("gs", "game_server", "gs-new")])  # a's peer credential removed
        await eventually(lambda: _not(linked))
        deadline = time.monotonic() + 1.0  # a redials every <= 0.3 s: it must stay out
        while time.monotonic() < deadline:
            assert not await linked()
            await asyncio.sleep(0.05)
        assert server.app[REGISTRY_KEY].get_sample_value("credential_reloads_total", {"result": "ok"}) == 2


async def _not(check: Callable[[], Awaitable[bool]]) -> bool:
    return not await check()
