"""Money traffic over HTTP that remembers every acknowledged answer, and the check after a crash.

`check()` compares the recovered ledger with what clients were told: every acknowledged transaction
is journaled exactly once, at the sequence it was acknowledged with and with the balance it was
acknowledged with; balances equal the fold of the journal; the hash chain verifies; and retrying an
acknowledged request returns the original answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from core_ledger.domain.accounts import is_player_account, player_account, player_of
from harness.verify import duplicate_keys, fold_journal, read_journal
from tests.support.ledger import auth_headers

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=20)
PLAYERS = ("p0", "p1", "p2", "p3")
CURRENCY = "EUR"
OPENING_DEPOSIT_MINOR = 1_000_000
LOAD_TIMEOUT_S = 60.0
REQUESTS_PER_WORKER_MAX = 100_000
RETRY_WORKERS = 8


@dataclass(frozen=True)
class Request:
    role: str
    path: str
    body: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.body["id"])


@dataclass(frozen=True)
class Ack:
    request: Request
    answer: dict[str, Any]


def deposit(tx_id: str, player: str, amount_minor: int) -> Request:
    return Request(
        "cashier",
        "/v1/deposits",
        {"id": tx_id, "player_id": player, "currency": CURRENCY, "amount_minor": amount_minor},
    )


def bet(tx_id: str, player: str, amount_minor: int, round_id: str) -> Request:
    return Request(
        "edge",
        "/v1/bets",
        {
            "id": tx_id,
            "player_id": player,
            "currency": CURRENCY,
            "amount_minor": amount_minor,
            "round_id": round_id,
            "game_id": "slots",
            "client_id": "gs",
        },
    )


async def send(http: aiohttp.ClientSession, url: str, req: Request) -> tuple[int, str, Any]:
    """(status, content type, parsed body) of one request."""
    async with http.post(url + req.path, json=req.body, headers=auth_headers(req.role)) as r:
        return r.status, r.content_type, await r.json(content_type=None)


async def open_accounts(http: aiohttp.ClientSession, url: str) -> list[Ack]:
    acks = []
    for player in PLAYERS:
        async with http.post(
            url + "/admin/v1/players",
            json={"player_id": player, "currencies": [CURRENCY]},
            headers=auth_headers("admin_write"),
        ) as r:
            assert r.status == 201, await r.text()
        req = deposit(f"open-{player}", player, OPENING_DEPOSIT_MINOR)
        status, _, body = await send(http, url, req)
        assert status == 201, body
        acks.append(Ack(req, body))
    return acks


def traffic(worker: int, i: int) -> Request:
    """The i-th request of a worker: three bets for each deposit, spread over the players."""
    player = PLAYERS[(worker + i) % len(PLAYERS)]
    if i % 4 == 0:
        return deposit(f"d-{worker}-{i}", player, 7)
    return bet(f"b-{worker}-{i}", player, 3, f"r-{worker}-{i // 8}")


@dataclass
class Load:
    """Concurrent workers; `acks` grows as answers arrive, in no particular order."""

    url: str
    workers: int
    acks: list[Ack] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _worker(self, http: aiohttp.ClientSession, worker: int) -> None:
        for i in range(REQUESTS_PER_WORKER_MAX):
            if self.stop.is_set():
                return
            req = traffic(worker, i)
            try:
                status, _, body = await send(http, self.url, req)
            except (TimeoutError, aiohttp.ClientError):
                return  # the ledger is gone (power cut)
            if 200 <= status < 300:
                self.acks.append(Ack(req, body))

    async def run_until(self, http: aiohttp.ClientSession, acks_min: int) -> list[asyncio.Task[None]]:
        """Start the workers and return (still running) once `acks_min` answers were acknowledged."""
        tasks = [asyncio.create_task(self._worker(http, w)) for w in range(self.workers)]
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while len(self.acks) < acks_min and time.monotonic() < deadline and not all(t.done() for t in tasks):  # noqa: ASYNC110  polls what the workers count; deadline-bound
            await asyncio.sleep(0.01)
        assert len(self.acks) >= acks_min, f"only {len(self.acks)} acknowledged in {LOAD_TIMEOUT_S}s"
        return tasks

    async def finish(self, tasks: list[asyncio.Task[None]]) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=LOAD_TIMEOUT_S)


@dataclass
class Report:
    acknowledged: int
    journaled: int
    lost: list[str]  # acknowledged, not in the recovered journal
    duplicated: list[tuple[str, str]]
    misplaced: list[str]  # journaled at another sequence or with another balance than acknowledged
    fold_problems: list[str]  # gaps, chain breaks, postings not summing to zero
    balance_mismatches: list[str]  # the ledger's balance differs from the fold of its journal
    chain_ok: bool
    changed_on_retry: list[str]  # retrying the acknowledged request gave another answer

    @property
    def clean(self) -> bool:
        return (
            not (
                self.lost
                or self.duplicated
                or self.misplaced
                or self.fold_problems
                or self.balance_mismatches
                or self.changed_on_retry
            )
            and self.chain_ok
        )


def _balances_after(entries: list[dict[str, Any]]) -> dict[int, dict[str, int]]:
    """For each sequence, the balance of every player account it touched, right after it."""
    running: dict[str, int] = defaultdict(int)
    after: dict[int, dict[str, int]] = {}
    for e in entries:
        touched = {}
        for p in e["postings"]:
            running[p["account"]] += p["amount_minor"]
            touched[p["account"]] = running[p["account"]]
        after[e["sequence"]] = touched
    return after


def _misplaced(acks: list[Ack], entries: list[dict[str, Any]]) -> list[str]:
    by_seq = {e["sequence"]: e for e in entries}
    after = _balances_after(entries)
    wrong = []
    for ack in acks:
        tx, bal = ack.answer["transaction"], ack.answer["balance"]
        entry = by_seq.get(tx["sequence"])
        if entry is None or entry["transaction"]["id"] != ack.request.id:
            if any(e["transaction"]["id"] == ack.request.id for e in entries):
                wrong.append(f"{ack.request.id}: not at sequence {tx['sequence']}")
            continue
        account = player_account(bal["player_id"], bal["currency"])
        if after[tx["sequence"]].get(account) != bal["balance_minor"]:
            wrong.append(f"{ack.request.id}: balance after is not {bal['balance_minor']}")
    return wrong


async def _balance_mismatches(http: aiohttp.ClientSession, url: str, folded: dict[str, int]) -> list[str]:
    wrong = []
    for player in PLAYERS:
        async with http.get(f"{url}/v1/players/{player}/balances", headers=auth_headers("edge")) as r:
            assert r.status in (200, 404), await r.text()
            balances = (await r.json())["balances"] if r.status == 200 else []  # 404: lost with its history
        ledger = {player_account(player, b["currency"]): b["balance_minor"] for b in balances}
        for account in sorted(set(ledger) | {a for a in folded if is_player_account(a) and player_of(a) == player}):
            if ledger.get(account) != folded.get(account, 0):
                wrong.append(f"{account}: ledger {ledger.get(account)} != journal fold {folded.get(account, 0)}")
    return wrong


async def _changed_on_retry(http: aiohttp.ClientSession, url: str, acks: list[Ack]) -> list[str]:
    changed: list[str] = []
    queue = list(acks)

    async def retry() -> None:
        while queue:
            ack = queue.pop()
            status, _, body = await send(http, url, ack.request)
            same = status == 200 and body.get("replayed") is True and body["transaction"] == ack.answer["transaction"]
            if not same or body["balance"] != ack.answer["balance"]:
                changed.append(f"{ack.request.id}: retry answered {status}")

    await asyncio.gather(*(retry() for _ in range(RETRY_WORKERS)))
    return changed


async def check(http: aiohttp.ClientSession, url: str, acks: list[Ack]) -> Report:
    """Everything the recovered ledger should satisfy, measured (asserting is up to the test)."""
    entries = await read_journal(http, url, auth_headers("replica"))
    journaled = {e["transaction"]["id"] for e in entries}
    folded, fold_problems = fold_journal(entries)
    async with http.post(url + "/admin/v1/audit/verify", headers=auth_headers("admin_read")) as r:
        audit = await r.json()
    chain_ok = audit["ok"] is True and audit["head_sequence"] == len(entries) == audit["entries_checked"]
    return Report(
        acknowledged=len(acks),
        journaled=len(entries),
        lost=[a.request.id for a in acks if a.request.id not in journaled],
        duplicated=duplicate_keys(entries),
        misplaced=_misplaced(acks, entries),
        fold_problems=fold_problems,
        balance_mismatches=await _balance_mismatches(http, url, folded),
        chain_ok=chain_ok,
        changed_on_retry=await _changed_on_retry(http, url, acks),  # last: it re-applies lost ones
    )
