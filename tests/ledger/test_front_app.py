"""A front's side of the channel (core_ledger/front_app.py), in one process: the test plays the
ledger process. A front forwards the request's credential and epoch claim with its commands; when
the channel ends, every request waiting on it gets a retryable 503 at once, and so does any later
one (never a request left hanging)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from shared.auth import TokenStore
from shared.errors import Unavailable

from core_ledger import front_app
from core_ledger.domain import Command
from core_ledger.front_app import EPOCH_CLAIM, RemoteLedger, relay_target
from core_ledger.front_channel import (
    FRAME_BYTES_MAX,
    ChannelError,
    FrameReader,
    epoch_message,
    frame,
    results_message,
    submit_of,
    tokens_message,
)
from tests.support.ledger import NAMES, TOKENS, ledger_config

WAIT_S = 5.0


@pytest.fixture
async def channel() -> AsyncIterator[tuple[RemoteLedger, FrameReader, asyncio.StreamWriter, TokenStore]]:
    ours, theirs = socket.socketpair()
    raw_reader, writer = await asyncio.open_connection(sock=ours, limit=FRAME_BYTES_MAX)
    reader = FrameReader(raw_reader)  # the ledger's end, as core_ledger/fronts.py reads it
    front_reader, front_writer = await asyncio.open_connection(sock=theirs, limit=FRAME_BYTES_MAX)
    tokens = TokenStore(())
    remote = RemoteLedger(front_reader, front_writer, tokens)
    try:
        yield remote, reader, writer, tokens
    finally:
        writer.close()
        front_writer.close()


def bet_command(id_: str) -> Command:
    return Command("bet", {"id": id_, "amount_minor": 5}, NAMES["edge"], (NAMES["edge"], id_), NAMES["edge"])


def request(claim: int | None = None) -> Any:
    req = make_mocked_request("POST", "/v1/bets", headers={"Authorization": f"Bearer {TOKENS['edge']}"})
    if claim is not None:
        req[EPOCH_CLAIM] = claim
    return req


@pytest.fixture
async def served(channel: Any) -> AsyncIterator[Any]:
    """The channel, with the front reading the ledger's frames until the test ends."""
    serving = asyncio.create_task(channel[0].serve())
    try:
        yield channel
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving


async def test_a_submit_carries_the_credential_and_claim_and_gets_its_answer(served: Any) -> None:
    remote, reader, writer, _ = served
    pending = asyncio.create_task(remote.submit(request(claim=7), [bet_command("a1")]))
    n, authorization, claim, commands = submit_of(await asyncio.wait_for(reader.next(), WAIT_S))
    assert (authorization, claim, commands) == (f"Bearer {TOKENS['edge']}", 7, [bet_command("a1")])
    writer.write(frame(results_message(n, 3, [(201, {"transaction": {"sequence": 9}})])))
    assert await asyncio.wait_for(pending, WAIT_S) == [(201, {"transaction": {"sequence": 9}})]
    assert remote.epoch == 3, "the epoch of the ledger's last answer, for the front's answer header"


async def test_pushed_credentials_replace_the_fronts(served: Any) -> None:
    remote, reader, writer, tokens = served
    pending = asyncio.create_task(remote.submit(request(), [bet_command("t1")]))
    n, *_ = submit_of(await asyncio.wait_for(reader.next(), WAIT_S))
    entries = ledger_config(Path("/nonexistent")).tokens
    writer.write(frame(tokens_message(entries)))
    writer.write(frame(results_message(n, 1, [(201, {})])))
    await asyncio.wait_for(pending, WAIT_S)  # frames are handled in order: the tokens first
    assert len(tokens) == len(entries)
    assert tokens.authenticate(f"Bearer {TOKENS['edge']}").name == NAMES["edge"]


async def test_when_the_ledger_goes_away_waiting_and_later_requests_get_a_retryable_503(channel: Any) -> None:
    remote, reader, writer, _ = channel
    serving = asyncio.create_task(remote.serve())
    waiting = asyncio.create_task(remote.submit(request(), [bet_command("b1")]))
    await asyncio.wait_for(reader.next(), WAIT_S)  # it was sent; its commit is in doubt
    writer.close()  # the ledger process is gone
    with pytest.raises(asyncio.IncompleteReadError):
        await asyncio.wait_for(serving, WAIT_S)
    with pytest.raises(Unavailable) as refused:
        await asyncio.wait_for(waiting, WAIT_S)
    assert refused.value.code == "ledger_unavailable"
    with pytest.raises(Unavailable):
        await asyncio.wait_for(remote.submit(request(), [bet_command("b2")]), WAIT_S)


async def test_a_frame_the_front_cannot_read_ends_its_channel_and_fails_what_waits(channel: Any) -> None:
    remote, reader, writer, _ = channel
    serving = asyncio.create_task(remote.serve())
    waiting = asyncio.create_task(remote.submit(request(), [bet_command("c1")]))
    await asyncio.wait_for(reader.next(), WAIT_S)
    writer.write(frame(["results", 1, 3, [[201, "not an object"]]]))
    with pytest.raises(ChannelError):
        await asyncio.wait_for(serving, WAIT_S)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(waiting, WAIT_S)


async def test_frames_split_across_reads_or_sharing_one_are_read_whole_and_in_order() -> None:
    ours, theirs = socket.socketpair()
    reader, our_writer = await asyncio.open_connection(sock=ours)  # both ends kept open by the test
    their_reader, writer = await asyncio.open_connection(sock=theirs)
    frames = FrameReader(reader)
    messages = [["observed", [["/v1/bets", "POST", 201, 0.001 * i]]] for i in range(50)]
    data = b"".join(frame(m) for m in messages)
    writer.write(data[:3])  # not even a whole length
    await writer.drain()
    writer.write(data[3:1000])
    await writer.drain()
    writer.write(data[1000:])
    got: list[list[Any]] = []
    while len(got) < len(messages):
        got += await asyncio.wait_for(frames.next_frames(), WAIT_S)
    assert got == messages
    writer.close()
    with pytest.raises(asyncio.IncompleteReadError):
        await asyncio.wait_for(frames.next_frames(), WAIT_S)
    our_writer.close()
    del their_reader


async def test_a_credential_push_naming_an_unknown_role_ends_the_channel(channel: Any) -> None:
    remote, _, writer, tokens = channel
    serving = asyncio.create_task(remote.serve())
    waiting = asyncio.create_task(remote.submit(request(), [bet_command("r1")]))
    writer.write(frame(["tokens", [["someone", "root", "0" * 64]]]))
    with pytest.raises(ChannelError, match="unknown role"):
        await asyncio.wait_for(serving, WAIT_S)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(waiting, WAIT_S)
    assert len(tokens) == 0, "nothing of the push was taken"


@pytest.mark.parametrize("failure", [ChannelError("a broken frame"), RuntimeError("a bug"), ConnectionResetError()])
async def test_a_front_whose_channel_fails_in_any_way_stops_serving(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    raised: list[int] = []
    monkeypatch.setattr(front_app.signal, "raise_signal", raised.append)

    class Failing:
        async def serve(self) -> None:
            raise failure

    await front_app._serve_until_ledger_ends(Failing())  # type: ignore[arg-type]  # a stand-in with serve() only
    assert raised == [signal.SIGTERM], "the front stops; the ledger starts a new one"


async def test_the_ledgers_epoch_pushed_is_the_one_a_front_answers_with(channel: Any) -> None:
    remote, _, writer, _ = channel
    serving = asyncio.create_task(remote.serve())
    writer.write(frame(epoch_message(4)))
    writer.write(frame(["epoch", -1]))  # a lie the front does not take
    with pytest.raises(ChannelError):
        await asyncio.wait_for(serving, WAIT_S)
    assert remote.epoch == 4


@pytest.mark.parametrize(
    ("sent", "relayed"),
    [
        ("/v1/a%2Fb?q=%20x", "/v1/a%2Fb?q=%20x"),  # as sent, not re-encoded
        ("http://ledger.example/v1/limits?x=1", "/v1/limits?x=1"),  # absolute form: its path and query only
    ],
)
def test_a_relayed_target_is_the_path_and_query_as_sent(sent: str, relayed: str) -> None:
    assert relay_target(make_mocked_request("GET", sent)) == relayed
