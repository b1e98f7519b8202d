"""The ledger process's side of its fronts (core_ledger/fronts.py, core_ledger/front_channel.py),
in one process: the test plays a front on one end of a socket pair, `Fronts` serves the other.

What a lying or broken front can and cannot do: it can submit only what a caller it was shown a
valid token for may submit (the ledger authenticates the forwarded credential and authorizes each
command again); a frame that breaks the protocol ends its channel; its timings reach the HTTP
metric only for the routes a front serves."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from shared.auth import Principal
from shared.errors import CroupierError
from shared.tracing import TraceMetrics
from shared.web import HTTP_METRICS_KEY, REGISTRY_KEY, TOKENS_KEY

from core_ledger import fronts as fronts_module
from core_ledger.app_keys import FENCING, SERVICE
from core_ledger.domain import Command
from core_ledger.front_channel import (
    FRAME_BYTES_MAX,
    ChannelError,
    FrameReader,
    Outbox,
    answer_of,
    command_of,
    connections_message,
    frame,
    observed_message,
    results_message,
    spans_message,
    submit_message,
    tokens_of,
)
from core_ledger.fronts import Fronts, rebuilt
from core_ledger.metrics import LedgerMetrics
from tests.support.ledger import NAMES, TOKENS, Api, bet, ledger_config

READ_TIMEOUT_S = 5.0
BATCH_ACTIONS_MAX = 8


@dataclass
class Front:
    """The test's end of the channel: what a front sends and reads."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    serving: asyncio.Task[None]
    their_writer: asyncio.StreamWriter  # the ledger's end
    n: int = 0

    def __post_init__(self) -> None:
        self.frames = FrameReader(self.reader)

    async def read(self) -> list[Any]:
        return await asyncio.wait_for(self.frames.next(), READ_TIMEOUT_S)

    async def submit(
        self, commands: list[Command], *, role: str = "edge", authorization: str | None = None, claim: int | None = None
    ) -> tuple[int, list[Any] | CroupierError]:
        self.n += 1
        header = authorization if authorization is not None else f"Bearer {TOKENS[role]}"
        self.writer.write(frame(submit_message(self.n, header, claim, commands)))
        n, epoch, outcome = answer_of(await self.read())
        assert n == self.n
        return epoch, outcome


def money(tx_type: str, body: dict[str, Any], role: str = "edge", **key: Any) -> Command:
    name = NAMES[role]
    client_id = key.get("client_id", name)
    return Command(tx_type, body, key.get("principal", name), (client_id, body["id"]), key.get("via"))


def cashier_deposit(id_: str, **key: Any) -> Command:
    body = {"id": id_, "player_id": "p1", "currency": "EUR", "amount_minor": 5}
    return money("deposit", body, role="cashier", **key)


@pytest.fixture
async def front(api: Api) -> AsyncIterator[tuple[Front, Fronts, CollectorRegistry]]:
    app = api.client.app
    await api.player("p1", deposit=10_000)
    registry = CollectorRegistry()
    fronts = Fronts(
        1,
        ["unused"],
        app[SERVICE],
        app[FENCING],
        app[TOKENS_KEY],
        app[HTTP_METRICS_KEY],
        TraceMetrics(registry),
        LedgerMetrics(registry),
        BATCH_ACTIONS_MAX,
    )
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours, limit=FRAME_BYTES_MAX)
    their_reader, their_writer = await asyncio.open_connection(sock=theirs, limit=FRAME_BYTES_MAX)
    serving = asyncio.create_task(fronts._serve(their_reader, Outbox(their_writer), 0))
    try:
        yield Front(reader, writer, serving, their_writer), fronts, registry
    finally:
        writer.close()
        their_writer.close()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError, ChannelError):
            await serving


async def balance(api: Api) -> int:
    status, body = await api.get("edge", "/v1/players/p1/balances")
    assert status == 200, body
    [eur] = body["balances"]
    return int(eur["balance_minor"])


async def test_a_forwarded_bet_is_judged_and_committed_as_the_ledgers_own(front: Any, api: Api) -> None:
    channel, _, _ = front
    epoch, results = await channel.submit([money("bet", bet("b1", 300))])
    assert isinstance(results, list)
    [(status, body)] = results
    assert status == 201, body
    assert epoch == api.client.app[SERVICE].epoch
    assert await balance(api) == 10_000 - 300
    # The same id again: the stored answer, replayed (a front's retry never charges twice).
    _, again = await channel.submit([money("bet", bet("b1", 300))])
    assert isinstance(again, list) and again[0][1]["transaction"]["sequence"] == body["transaction"]["sequence"]
    assert await balance(api) == 10_000 - 300


async def test_a_decision_error_comes_back_as_the_commands_own_result(front: Any) -> None:
    channel, _, _ = front
    _, results = await channel.submit([money("bet", bet("too-much", 10**9))])
    assert isinstance(results, list)
    [(status, problem)] = results  # a stored rejection: replayed as such on a retry
    assert status == 422 and problem["code"] == "insufficient_funds"


@pytest.mark.parametrize(
    ("what", "commands", "role", "authorization", "code"),
    [
        ("no credential", [money("bet", bet("x1"))], "edge", "", "unauthenticated"),
        ("an unknown token", [money("bet", bet("x2"))], "edge", "Bearer not-a-token", "unauthenticated"),
        ("another principal's name", [money("bet", bet("x3"), principal="someone-else")], "edge", None, "forbidden"),
        ("a type its role may not send", [money("deposit", bet("x4"), role="edge")], "edge", None, "forbidden"),
        (
            "an admin command, with the admin's own credential",
            [
                Command(
                    "player_create", {"id": "a1", "player_id": "p9"}, NAMES["admin_write"], (NAMES["admin_write"], "a1")
                )
            ],
            "admin_write",
            None,
            "forbidden",
        ),
        (
            "a command without an idempotency key",
            [Command("player_create", {"player_id": "p9", "currencies": ["EUR"]}, NAMES["edge"], None)],
            "edge",
            None,
            None,
        ),
        (
            "a cashier writing for another client",
            [cashier_deposit("d1", client_id="other")],
            "cashier",
            None,
            "forbidden",
        ),
        (
            "a cashier naming a via",
            [cashier_deposit("d2", via="edge-x")],
            "cashier",
            None,
            "forbidden",
        ),
    ],
)
async def test_a_lying_front_can_submit_only_what_the_presented_credential_may(
    front: Any, api: Api, what: str, commands: list[Command], role: str, authorization: str | None, code: str | None
) -> None:
    channel, _, _ = front
    head = api.client.app[SERVICE].head.sequence
    if code is None:  # a command without an idempotency key is not even a well-formed forwarded command
        channel.writer.write(
            frame(
                [
                    "submit",
                    1,
                    f"Bearer {TOKENS[role]}",
                    None,
                    [[commands[0].type, commands[0].request, commands[0].principal, None, None, None]],
                ]
            )
        )
        with pytest.raises(ChannelError):
            await asyncio.wait_for(channel.serving, READ_TIMEOUT_S)
    else:
        _, outcome = await channel.submit(commands, role=role, authorization=authorization)
        assert isinstance(outcome, CroupierError) and outcome.code == code, (what, outcome)
    assert api.client.app[SERVICE].head.sequence == head, f"{what}: nothing journaled"


def _with(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, **changes}


@pytest.mark.parametrize(
    ("what", "command", "code"),
    [
        ("a negative stake (credits the player)", money("bet", _with(bet("v1"), amount_minor=-5_000)), None),
        ("a stake not a number (halts judging)", money("bet", _with(bet("v2"), amount_minor="lots")), None),
        ("a member the model does not have", money("bet", _with(bet("v3"), bonus_cash=10**6)), None),
        ("a client id that is not an id", money("bet", bet("v4"), client_id="edge 1/../x"), None),
        ("a key whose id is not the request's", money("bet", _with(bet("v5"), id="v5-other")), "forbidden"),
    ],
)
async def test_a_lying_fronts_request_is_validated_as_the_ledgers_own_handler_validates_it(
    front: Any, api: Api, what: str, command: Command, code: str | None
) -> None:
    channel, _, _ = front
    head = api.client.app[SERVICE].head.sequence
    if code == "forbidden":  # `money` keys a command by its body's id: a front that lies about it
        command = Command(command.type, command.request, command.principal, (NAMES["edge"], "v5"), command.via)
    _, outcome = await channel.submit([command])
    assert isinstance(outcome, CroupierError) and outcome.code == (code or "validation_error"), (what, outcome)
    assert api.client.app[SERVICE].head.sequence == head, f"{what}: nothing journaled"
    assert await balance(api) == 10_000
    # Refused as a request is refused, not judged: the ledger is not halted and takes the next bet.
    _, results = await channel.submit([money("bet", bet(f"after-{command.request['id']}", 100))])
    assert isinstance(results, list) and results[0][0] == 201, (what, results)
    assert api.client.app[SERVICE].halted is None


def test_an_edges_own_name_is_not_put_into_its_request_as_client_id_or_via() -> None:
    # Token names need not be ids: the ledger's own handler takes the credential's name as the
    # default client id and via without validating it as a body member, and so must `rebuilt`.
    who = Principal("edge eu#1", "edge")
    forwarded = Command("bet", bet("n1"), who.name, (who.name, "n1"), who.name)
    [own] = rebuilt(who, [forwarded])
    assert (own.key, own.via) == ((who.name, "n1"), who.name)
    named = Command("bet", bet("n2"), who.name, ("game-7", "n2"), "edge-eu")  # named in the body: validated
    [own] = rebuilt(who, [named])
    assert (own.key, own.via) == (("game-7", "n2"), "edge-eu")


@pytest.mark.parametrize(
    ("what", "role", "commands", "code"),
    [
        ("a cashier's two deposits", "cashier", [cashier_deposit("m1"), cashier_deposit("m2")], "forbidden"),
        (
            "an edge's batch over batch_actions_max",
            "edge",
            [money("bet", bet(f"m{i}", 1)) for i in range(BATCH_ACTIONS_MAX + 1)],
            "validation_error",
        ),
    ],
)
async def test_a_submit_of_many_commands_is_only_what_a_batch_admits(
    front: Any, api: Api, what: str, role: str, commands: list[Command], code: str
) -> None:
    channel, _, _ = front
    head = api.client.app[SERVICE].head.sequence
    _, outcome = await channel.submit(commands, role=role)
    assert isinstance(outcome, CroupierError) and outcome.code == code, (what, outcome)
    assert api.client.app[SERVICE].head.sequence == head, f"{what}: nothing journaled"
    # A batch within the bound goes through.
    _, results = await channel.submit([money("bet", bet(f"ok{i}", 1)) for i in range(BATCH_ACTIONS_MAX)])
    assert isinstance(results, list) and [status for status, _ in results] == [201] * BATCH_ACTIONS_MAX


async def test_answers_over_the_frame_bound_are_refused_as_a_bug_and_the_retry_replays_them(
    front: Any, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel, _, _ = front

    def oversized(n: int, epoch: int, results: list[Any]) -> list[Any]:
        return [*results_message(n, epoch, results), "x" * FRAME_BYTES_MAX]

    monkeypatch.setattr(fronts_module, "results_message", oversized)
    _, outcome = await channel.submit([money("bet", bet("big1", 300))])
    assert isinstance(outcome, CroupierError) and outcome.code == "internal_error", outcome
    assert await balance(api) == 10_000 - 300  # committed: the answer, not the bet, was lost
    monkeypatch.undo()
    _, again = await channel.submit([money("bet", bet("big1", 300))])
    assert isinstance(again, list) and again[0][0] == 200 and again[0][1]["replayed"] is True  # a replay
    assert await balance(api) == 10_000 - 300


async def test_when_not_even_a_refusal_can_be_sent_the_channel_is_cut(
    front: Any, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel, _, _ = front

    def broken(*args: Any) -> list[Any]:
        raise RuntimeError("a bug building answers")

    monkeypatch.setattr(fronts_module, "results_message", broken)
    monkeypatch.setattr(fronts_module, "refused_message", broken)
    channel.writer.write(frame(submit_message(1, f"Bearer {TOKENS['edge']}", None, [money("bet", bet("cut1"))])))
    with pytest.raises(asyncio.IncompleteReadError):  # the front reads the end of its channel: it stops
        await channel.read()


async def test_a_failed_task_does_not_stop_the_fronts_stop(front: Any) -> None:
    _, fronts, _ = front

    async def failing() -> None:
        raise RuntimeError("a bug in a front's task")

    fronts._tasks = [asyncio.create_task(failing()), asyncio.create_task(asyncio.sleep(60))]
    await asyncio.sleep(0)
    await asyncio.wait_for(fronts.stop(), READ_TIMEOUT_S)  # logged, not raised: the ledger's stop goes on
    assert all(task.done() for task in fronts._tasks)


async def test_a_malformed_epoch_claim_is_refused_and_changes_nothing(front: Any, api: Api) -> None:
    channel, _, _ = front
    _, outcome = await channel.submit([money("bet", bet("c1"))], claim=10**19)
    assert isinstance(outcome, CroupierError) and outcome.code == "validation_error"
    assert not api.client.app[SERVICE].fenced
    # A claim at or below this copy's epoch is heard and changes nothing either.
    _, results = await channel.submit([money("bet", bet("c2"))], claim=api.client.app[SERVICE].epoch)
    assert isinstance(results, list) and results[0][0] == 201


async def test_a_claim_above_this_copys_epoch_is_judged_before_the_commands_are_queued(front: Any, api: Api) -> None:
    channel, _, _ = front
    epoch = api.client.app[SERVICE].epoch
    _, results = await channel.submit([money("bet", bet("j1"))], claim=epoch + 5)
    # No peer to prove it (this copy has none): unverifiable, counted, and no fence; the bet goes on.
    assert isinstance(results, list) and results[0][0] == 201
    assert not api.client.app[SERVICE].fenced
    status, text = await api.get("admin_read", "/metrics")
    assert status == 200 and 'ledger_epoch_claims_total{outcome="unverifiable"} 1.0' in text


@pytest.mark.parametrize(
    ("what", "raw"),
    [
        ("not JSON", b"{nope"),
        ("not a list", b'{"kind": "submit"}'),
        ("an unknown kind", b'["delete_everything", 1]'),
        ("a submit without commands", b'["submit", 1, "Bearer x", null, []]'),
        (
            "a command of the wrong shape",
            b'["submit", 1, "Bearer x", null, [["bet", "not an object", "a", "b", "c", null]]]',
        ),
        ("a non-integer n", b'["submit", "1", "Bearer x", null, [["bet", {}, "a", "b", "c", null]]]'),
        ("a boolean claim", b'["submit", 1, "Bearer x", true, [["bet", {}, "a", "b", "c", null]]]'),
    ],
)
async def test_a_frame_that_breaks_the_protocol_ends_the_channel(front: Any, api: Api, what: str, raw: bytes) -> None:
    channel, _, _ = front
    head = api.client.app[SERVICE].head.sequence
    channel.writer.write(struct.pack("!I", len(raw)) + raw)
    with pytest.raises(ChannelError):
        await asyncio.wait_for(channel.serving, READ_TIMEOUT_S)
    assert api.client.app[SERVICE].head.sequence == head, what


async def test_a_frame_over_the_size_bound_ends_the_channel_before_it_is_read(front: Any) -> None:
    channel, _, _ = front
    channel.writer.write(struct.pack("!I", FRAME_BYTES_MAX + 1))
    with pytest.raises(ChannelError, match="over"):
        await asyncio.wait_for(channel.serving, READ_TIMEOUT_S)


def _count(registry_text: str, route: str) -> float:
    total = 0.0
    for line in registry_text.splitlines():
        if line.startswith("http_request_duration_seconds_count{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_observed_requests_reach_the_http_metric_for_front_routes_only(front: Any, api: Api) -> None:
    channel, _, _ = front
    observations = [
        ("/v1/bets", "POST", 201, 0.004),
        ("/v1/bets", "POST", 201, 0.006),
        ("/v1/invented/{x}", "POST", 201, 0.001),  # not a front's route: would grow the label sets
        ("/v1/bets", "GET", 200, 0.001),
        ("/v1/bets", "POST", 999, 0.001),
        ("/v1/bets", "POST", 201, -5.0),
        ("/{tail:.*}", "GET", 503, 0.002),  # a relayed route the front answered itself
        ("/{tail:.*}", "BREW", 503, 0.002),  # a method no route has: would grow the label sets
    ]
    channel.writer.write(frame(observed_message(observations)))
    channel.writer.write(frame(submit_message(1, f"Bearer {TOKENS['edge']}", None, [money("bet", bet("o1"))])))
    await channel.read()  # the observations were applied before this submit was read
    status, text = await api.get("admin_read", "/metrics")
    assert status == 200
    assert _count(text, "/v1/bets") >= 2
    assert 'route="/v1/invented/{x}"' not in text
    assert _count(text, "/{tail:.*}") == 1 and 'method="BREW"' not in text
    assert 'status="999"' not in text


async def test_a_fronts_span_counts_add_to_the_ledgers_and_a_lie_about_them_ends_the_channel(front: Any) -> None:
    channel, _, registry = front

    def exported(result: str) -> float:
        return registry.get_sample_value("trace_spans_exported_total", {"result": result}) or 0.0

    channel.writer.write(frame(spans_message({"ok": 7, "failed": 2})))
    channel.writer.write(frame(spans_message({"ok": 1})))
    channel.writer.write(frame(submit_message(1, f"Bearer {TOKENS['edge']}", None, [money("bet", bet("s1"))])))
    await channel.read()  # read after the counts
    assert (exported("ok"), exported("failed")) == (8, 2)
    channel.writer.write(frame(spans_message({"ok": -3})))  # would lower a counter
    with pytest.raises(ChannelError):
        await asyncio.wait_for(channel.serving, READ_TIMEOUT_S)
    assert (exported("ok"), exported("failed")) == (8, 2)


async def test_a_fronts_connection_counts_reach_the_ledgers_metrics_and_a_lie_ends_the_channel(
    front: Any, api: Api
) -> None:
    channel, _, _ = front
    http_registry = api.client.app[REGISTRY_KEY]

    def sample(name: str) -> float:
        return http_registry.get_sample_value(name) or 0.0

    open_before, refused_before = sample("http_connections_open"), sample("http_connections_refused_total")
    channel.writer.write(frame(connections_message(40, 3)))
    channel.writer.write(frame(connections_message(25, 2)))  # open now replaces; refused adds up
    channel.writer.write(frame(submit_message(1, f"Bearer {TOKENS['edge']}", None, [money("bet", bet("c1"))])))
    await channel.read()  # read after the counts
    assert sample("http_connections_open") == open_before + 25
    assert sample("http_connections_refused_total") == refused_before + 5
    # A front cannot lower the counter nor claim an absurd count: its channel ends, the figures stay.
    channel.writer.write(frame(connections_message(25, -4)))
    with pytest.raises(ChannelError):
        await asyncio.wait_for(channel.serving, READ_TIMEOUT_S)
    assert sample("http_connections_refused_total") == refused_before + 5


async def test_span_counts_of_an_unknown_result_end_the_channel(front: Any) -> None:
    channel, _, registry = front
    channel.writer.write(frame(spans_message({"made_up": 1})))
    with pytest.raises(ChannelError):
        await asyncio.wait_for(channel.serving, READ_TIMEOUT_S)
    assert registry.get_sample_value("trace_spans_exported_total", {"result": "made_up"}) is None


async def test_a_credential_reload_reaches_the_front_as_hashes_only(front: Any, api: Api) -> None:
    channel, fronts, _ = front
    fronts._outboxes[0] = Outbox(channel.their_writer)  # as `_run` registers a started front's channel
    pushing = asyncio.create_task(fronts._push_state())
    await asyncio.sleep(0)  # it notes the credentials accepted now
    try:
        tokens = api.client.app[TOKENS_KEY]
        kept = [e for e in tokens.entries if e.role != "cashier"]  # the cashier's token revoked
        tokens.replace(kept)
        message = await channel.read()
        assert message[0] == "tokens"
        assert tokens_of(message) == kept
        assert not any(token in str(message) for token in TOKENS.values()), "a token itself never crosses"
    finally:
        pushing.cancel()


def test_a_command_keeps_its_fields_across_the_channel() -> None:
    command = Command("win", {"id": "w1", "amount_minor": 5}, "edge-1", ("client-a", "w1"), "edge-1")
    assert command_of(submit_message(1, "", None, [command])[4][0]) == command


def test_the_private_socket_takes_every_relay_the_fronts_may_make(tmp_path: Any) -> None:
    """Each front holds `http_connections_max` client connections and relays at most one request
    per connection: the ledger process's private socket takes that many per front, so a full front
    never makes another front's relays (`/readyz`, `/metrics`, journal tails) answer 503."""
    alone = ledger_config(tmp_path, http_connections_max=100)
    assert alone.listener_limits == alone.connection_limits
    three = ledger_config(tmp_path, http_connections_max=100, fronts=3)
    assert three.listener_limits.connections_max == 300
    assert three.listener_limits.idle_timeout_s == three.connection_limits.idle_timeout_s
