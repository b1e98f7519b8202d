"""Bugs the security suite found, kept as regression tests."""

from __future__ import annotations

import pytest

from tests.security.test_bad_input import PROBLEM

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="package")]


async def test_a_session_state_nested_too_deep_to_store_gets_a_problem_not_a_crash(client):
    # 300 levels parse (orjson reads up to 1024) but are deeper than orjson writes (255).
    raw = b'{"state":' + b'{"a":' * 300 + b"1" + b"}" * 301
    reply = await client.as_role("eu", "game_server", "PUT", "/v1/players/p003/session/deep-game", data=raw)
    assert reply.status == 400 and reply.content_type == PROBLEM, (reply.status, reply.raw[:200])
    assert reply.json()["code"] == "validation_error"
