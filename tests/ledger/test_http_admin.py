"""HTTP: admin API, reads, journal/export, audit, backups, service endpoints and the OpenAPI doc."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson
from openapi_spec_validator import validate

from core_ledger.app_keys import SERVICE
from tests.support.ledger import TOKENS, Api, bet


async def test_player_creation_is_idempotent_by_player_id_and_readable(api: Api) -> None:
    body = {"player_id": "p1", "currencies": ["EUR", "USD"]}
    status, first = await api.post("admin_write", "/admin/v1/players", body)
    assert status == 201
    status, again = await api.post("admin_write", "/admin/v1/players", body)
    assert status == 200 and again == {**first, "replayed": True}
    status, conflict = await api.post("admin_write", "/admin/v1/players", {**body, "currencies": ["EUR"]})
    assert status == 422 and conflict["field"] == "currencies"
    status, player = await api.get("admin_read", "/admin/v1/players/p1")
    assert status == 200 and player["frozen"] is False
    assert [b["currency"] for b in player["balances"]] == ["EUR", "USD"]
    assert (await api.get("admin_read", "/admin/v1/players/nobody"))[0] == 404
    assert (await api.get("admin_write", "/admin/v1/players/p1"))[0] == 403
    assert (await api.post("admin_read", "/admin/v1/players", body))[0] == 403


async def test_statement_rounds_trace_and_transaction_reads(api: Api) -> None:
    await api.player(deposit=1000)
    await api.post("edge", "/v1/bets", bet("b1", 100, via="eu", client_id="gs"))
    await api.post("edge", "/v1/bets", bet("b2", 200, via="eu", client_id="gs"))
    status, st = await api.get("admin_read", "/admin/v1/players/p1/statement?currency=EUR&limit=2")
    assert status == 200
    assert [(e["type"], e["amount_minor"], e["balance_minor"]) for e in st["entries"]] == [
        ("deposit", 1000, 1000),
        ("bet", -100, 900),
    ]
    _, rest = await api.get(
        "admin_read", f"/admin/v1/players/p1/statement?currency=EUR&after_sequence={st['next_after_sequence']}"
    )
    assert [e["balance_minor"] for e in rest["entries"]] == [700]
    assert (await api.get("admin_read", "/admin/v1/players/p1/statement"))[0] == 400
    _, rounds = await api.get("admin_read", "/admin/v1/rounds/r1")
    assert [t["id"] for t in rounds["rounds"][0]["transactions"]] == ["b1", "b2"]
    assert (await api.get("admin_read", "/admin/v1/rounds/none"))[0] == 404
    status, tx = await api.get("edge", "/v1/transactions/b2?client_id=gs")
    assert status == 200 and tx["amount_minor"] == 200 and tx["via"] == "eu"
    assert (await api.get("edge", "/v1/transactions/b2?client_id=other"))[0] == 404
    _, trace = await api.get("admin_read", "/admin/v1/transactions/b1/trace")
    assert trace["entries"][0]["via"] == "eu" and trace["entries"][0]["client_id"] == "gs"


async def test_journal_ndjson_and_export_chain_links(api: Api) -> None:
    await api.player(deposit=1000)
    await api.post("edge", "/v1/bets", bet("b1", 100))
    status, text = await api.get("replica", "/v1/journal?after_sequence=1&limit=5")
    entries = [orjson.loads(line) for line in text.splitlines()]
    assert status == 200 and [e["sequence"] for e in entries] == [2, 3]
    assert entries[1]["prev_hash"] == entries[0]["hash"]
    assert (await api.get("edge", "/v1/journal"))[0] == 403
    _, ndjson = await api.get("admin_read", "/admin/v1/journal/export?from_sequence=2&to_sequence=3")
    assert [orjson.loads(line)["sequence"] for line in ndjson.splitlines()] == [2, 3]
    _, text = await api.get("admin_read", "/admin/v1/journal/export?format=csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["type"] for r in rows] == ["player_create", "deposit", "bet"] and rows[2]["hash"] == entries[1]["hash"]


async def test_audit_replication_backup_and_service_endpoints(api: Api, tmp_path: Path) -> None:
    await api.player(deposit=1000)
    status, report = await api.post("admin_read", "/admin/v1/audit/verify")
    assert status == 200 and report["ok"] and report["entries_checked"] == 2 and report["first_bad_sequence"] is None
    _, repl = await api.get("admin_read", "/admin/v1/replication")
    assert repl["role"] == "primary" and repl["head"] == {"sequence": 2, "hash": report["head_hash"]}
    status, backup = await api.post("admin_write", "/admin/v1/backups")
    assert status == 201 and backup["head_sequence"] == 2 and backup["head_hash"] == report["head_hash"]
    assert (Path(backup["path"]) / "manifest.json").is_file() and backup["format_version"] == 1
    assert len((Path(backup["path"]) / "journal.ndjson").read_text().splitlines()) == 2
    assert (await api.get("", "/healthz"))[0] == 200
    status, ready = await api.get("", "/readyz")
    assert status == 200 and ready["role"] == "primary"
    status, metrics = await api.get("admin_read", "/metrics")
    assert status == 200 and "ledger_journal_head_sequence 2.0" in metrics
    assert 'ledger_transactions_total{outcome="committed",type="deposit"} 1.0' in metrics
    assert "ledger_audit_chain_ok 1.0" in metrics and "ledger_commit_failures_total 0.0" in metrics
    assert (await api.get("edge", "/metrics"))[0] == 403


async def test_openapi_document_is_valid_3_1_and_lists_every_route(api: Api) -> None:
    status, doc = await api.get("", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    validate(doc)
    for path in (
        "/v1/bets",
        "/v1/batch",
        "/v1/journal",
        "/admin/v1/audit/verify",
        "/admin/v1/backups",
        "/v1/jackpots/{jackpot_id}",
        "/admin/v1/players/{player_id}/statement",
    ):
        assert path in doc["paths"], path
    assert doc["components"]["schemas"]["BetIn"]["additionalProperties"] is False


async def test_a_stopped_writer_answers_503_ledger_unavailable_with_retry_after(api: Api) -> None:
    await api.player(deposit=100)
    await api.client.app[SERVICE].stop()
    async with api.client.post("/v1/bets", json=bet("b1"), headers={"Authorization": f"Bearer {TOKENS['edge']}"}) as r:
        assert r.status == 503 and r.headers["Retry-After"] == "1"
        assert (await r.json())["code"] == "ledger_unavailable"
    assert (await api.get("", "/readyz"))[0] == 503
