"""Invariant checks on a live cluster, used by `croupier demo` and the fault harness.

Each check returns a `Check(name, ok, detail)`; none changes anything. The ledger's journal
(GET /v1/journal, role admin_read) is folded independently of the ledger's own tables, so a bug
in the derived tables shows up as a difference.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from harness.account_names import Wallet, malformed_wallet, wallet_balances, wallet_of

JOURNAL_PAGE = 1000
JOURNAL_PAGES_MAX = 10_000


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


async def read_journal(http: aiohttp.ClientSession, ledger_url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    after = 0
    for _ in range(JOURNAL_PAGES_MAX):
        async with http.get(
            f"{ledger_url}/v1/journal", headers=headers, params={"after_sequence": after, "limit": JOURNAL_PAGE}
        ) as r:
            r.raise_for_status()
            lines = [ln for ln in (await r.read()).splitlines() if ln.strip()]
        page = [orjson.loads(ln) for ln in lines]
        entries.extend(page)
        if len(page) < JOURNAL_PAGE:
            return entries
        after = page[-1]["sequence"]
    raise RuntimeError("journal longer than the verifier's page bound")


def fold_journal(entries: list[dict[str, Any]]) -> tuple[dict[str, int], list[str]]:
    """Balances per account from the postings, and every problem found on the way."""
    balances: dict[str, int] = defaultdict(int)
    problems: list[str] = []
    prev_hash, expected_seq = "0" * 64, 1
    for e in entries:
        if e["sequence"] != expected_seq:
            problems.append(f"sequence gap: expected {expected_seq}, got {e['sequence']}")
        if e["prev_hash"] != prev_hash:
            problems.append(f"chain break at sequence {e['sequence']}")
        prev_hash, expected_seq = e["hash"], e["sequence"] + 1
        per_currency: Counter[str] = Counter()
        for p in e["postings"]:
            balances[p["account"]] += p["amount_minor"]
            per_currency[p["currency"]] += p["amount_minor"]
            if wallet_of(p["account"]) is not None and balances[p["account"]] < 0:
                problems.append(f"negative balance {p['account']} at sequence {e['sequence']}")
            if malformed_wallet(p["account"]):
                problems.append(f"malformed player account {p['account']!r} at sequence {e['sequence']}")
        if any(per_currency.values()):
            problems.append(f"postings do not sum to zero at sequence {e['sequence']}")
    return dict(balances), problems


def duplicate_keys(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(client_id, id) pairs journaled more than once: a transaction applied twice."""
    seen = Counter(
        (e["transaction"].get("client_id"), e["transaction"]["id"])
        for e in entries
        if e["transaction"].get("id") is not None
    )
    return [k for k, n in seen.items() if n > 1]


def conservation(entries: list[dict[str, Any]], problems: list[str]) -> Check:
    """Per currency: deposits − withdrawals (minus the cashier account) = players + house + pools + bonus."""
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for e in entries:
        for p in e["postings"]:
            by_kind[p["currency"]][p["account"].split(":", 1)[0]] += p["amount_minor"]
    parts, ok = [], not any("sum to zero" in p for p in problems)
    for currency, kinds in sorted(by_kind.items()):
        net_in = -kinds["cashier"]
        held = kinds["player"] + kinds["house"] + kinds["jackpot"] + kinds["bonus"]
        ok = ok and net_in == held and sum(kinds.values()) == 0
        parts.append(
            f"{currency}: in {net_in} = players {kinds['player']} + house {kinds['house']} "
            f"+ pools {kinds['jackpot']} + bonus {kinds['bonus']}"
        )
    return Check("money conserved per currency", ok, f"{len(entries)} entries; " + "; ".join(parts))


async def check_cluster(info: dict[str, Any], jackpot_ids: list[str], player_ids: list[str]) -> list[Check]:
    ledger = info["ledger"]["url"]
    tok = info["tokens"]
    admin_read = {"Authorization": f"Bearer {tok['admin_read']}"}
    admin_write = {"Authorization": f"Bearer {tok['admin_write']}"}
    edge_h = {"Authorization": f"Bearer {tok['edge']}"}
    gs_h = {"Authorization": f"Bearer {tok['game_server']}"}
    checks: list[Check] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        entries = await read_journal(http, ledger, admin_read)
        balances, problems = fold_journal(entries)
        checks.append(conservation(entries, problems))
        neg = [p for p in problems if "negative" in p]
        checks.append(Check("no negative player balance", not neg, neg[0] if neg else "every step >= 0"))
        dups = duplicate_keys(entries)
        checks.append(
            Check(
                "no transaction applied twice",
                not dups,
                f"duplicates: {dups[:3]}" if dups else "every (client_id, id) once",
            )
        )
        async with http.post(f"{ledger}/admin/v1/audit/verify", headers=admin_write) as r:
            audit = await r.json()
        chain_problems = [p for p in problems if "chain" in p or "gap" in p]
        checks.append(
            Check(
                "journal chain valid",
                bool(audit.get("ok")) and not chain_problems,
                f"ledger audit ok={audit.get('ok')} over {audit.get('entries_checked')} entries "
                f"(first bad: {audit.get('first_bad_sequence')}); "
                f"local: {chain_problems[0] if chain_problems else 'linked, gapless'}",
            )
        )
        mismatched = []
        wallets = wallet_balances(balances)
        for pid in player_ids:
            async with http.get(f"{ledger}/v1/players/{pid}/balances", headers=edge_h) as r:
                for b in (await r.json())["balances"]:
                    folded = wallets.get(Wallet(pid, b["currency"]), 0)
                    if folded != b["balance_minor"]:
                        mismatched.append(f"{pid} {b['currency']}: ledger {b['balance_minor']} journal {folded}")
        checks.append(
            Check(
                "balances equal the journal",
                not mismatched,
                mismatched[0] if mismatched else f"{len(player_ids)} players",
            )
        )
        checks.append(await _check_displays(http, info, jackpot_ids, player_ids, edge_h, gs_h))
    return checks


async def _check_displays(
    http: aiohttp.ClientSession,
    info: dict[str, Any],
    jackpot_ids: list[str],
    player_ids: list[str],
    edge_h: dict[str, str],
    gs_h: dict[str, str],
) -> Check:
    ledger = info["ledger"]["url"]
    wrong: list[str] = []
    for jid in jackpot_ids:
        async with http.get(f"{ledger}/v1/jackpots/{jid}", headers=edge_h) as r:
            truth = await r.json()
        for edge in info["edges"]:
            async with http.get(f"{edge['url']}/v1/jackpots/{jid}", headers=gs_h) as r:
                shown = await r.json(content_type=None)
                if r.status != 200:  # e.g. a value it cannot read: the display is broken, not a crash here
                    wrong.append(f"{edge['id']} {jid}: answered {r.status} {_code(shown)}")
                    continue
            if (shown["display_minor"], shown["epoch"]) != (truth["pool_minor"], truth["epoch"]):
                wrong.append(
                    f"{edge['id']} {jid}: shows {shown['display_minor']}@{shown['epoch']}, "
                    f"ledger {truth['pool_minor']}@{truth['epoch']}"
                )
    for pid in player_ids:
        async with http.get(f"{ledger}/v1/players/{pid}/bonuses", headers=edge_h) as r:
            truth_b = {b["bonus_id"]: b["wagered_minor"] for b in (await r.json())["bonuses"]}
        for edge in info["edges"]:
            async with http.get(f"{edge['url']}/v1/players/{pid}/bonus-progress", headers=gs_h) as r:
                answer = await r.json(content_type=None)
                if r.status != 200:
                    wrong.append(f"{edge['id']} {pid} bonus progress: answered {r.status} {_code(answer)}")
                    continue
                shown_b = {b["bonus_id"]: b["wagered_minor"] for b in answer["bonuses"]}
            for bid, wagered in truth_b.items():
                if shown_b.get(bid, 0) != wagered:
                    wrong.append(f"{edge['id']} {pid}/{bid}: shows {shown_b.get(bid, 0)}, ledger {wagered}")
    n = len(info["edges"])
    return Check(
        "every display equals the ledger",
        not wrong,
        wrong[0] if wrong else f"{n} edges x {len(jackpot_ids)} jackpots, {len(player_ids)} players' bonuses",
    )


def _code(answer: Any) -> str:
    return str(answer.get("code")) if isinstance(answer, dict) else "(no problem+json)"
