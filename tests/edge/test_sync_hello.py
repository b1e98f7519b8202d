"""What a peer can claim in its sync hello: an edge id and a sync level, nothing else.

A lying level is harmless to others: level 2 only spares this edge advertising its pushed writes to
that peer (which then asks again itself), so the liar can at worst slow its own convergence. A level
that is not an integer (a string, a bool, a float) or an id that is not a string is refused.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiohttp
import orjson
import pytest

from edge.crdt.protocol import ProtocolError
from edge.sync import SyncHub


class _OneMessage:
    def __init__(self, data: str) -> None:
        self._msg = SimpleNamespace(type=aiohttp.WSMsgType.TEXT, data=data)

    async def receive(self) -> SimpleNamespace:
        return self._msg


def _read(hello: object) -> tuple[str, int]:
    data = hello if isinstance(hello, str) else orjson.dumps(hello).decode()
    return asyncio.run(SyncHub._read_hello(None, _OneMessage(data)))  # type: ignore[arg-type]  # reads no state


def test_a_hello_names_the_edge_and_its_level_which_defaults_to_1():
    assert _read({"edge": "eu", "sync": 2}) == ("eu", 2)
    assert _read({"edge": "eu"}) == ("eu", 1)


@pytest.mark.parametrize(
    "hello",
    [{"edge": "eu", "sync": "2"}, {"edge": "eu", "sync": True}, {"edge": "eu", "sync": 2.0}, {"edge": 7}, [1], "{"],
)
def test_a_malformed_hello_is_refused(hello):
    with pytest.raises(ProtocolError):
        _read(hello)
