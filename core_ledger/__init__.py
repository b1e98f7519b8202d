"""The core ledger: a serializable, double-entry, hash-chained journal with an HTTP API.

Layers point inward: `http`/`admin_http` → `service` (the facade over `writer`, `failover`,
`replica_apply`) → `domain`; `store` holds the backends; `app` wires them together. The module
map is in docs/DESIGN.md (section "Processes and who talks to whom").

Choices the code makes (all covered by tests; the contract is docs/API.md, the design docs/DESIGN.md):
- `via`/`client_id` from a non-edge credential: 403 `forbidden`. An edge that omits them is
  recorded under its own credential name.
- A bet whose game or currency differs from its open round's: 400 `validation_error` (not bound).
- Rollback of an unknown bet: 201 with `bet_found: false` and `balance: null` (no currency is
  known); of a bet that was refused (never charged) or already rolled back: 201, `reversed: false`.
- Player and jackpot creation are idempotent by their natural id (same body: 200 replay; other
  body: 422 `idempotency_key_reused`). Admin adjustments and bonus grants: by (admin, id).
- A bonus id granted twice to one player: 400. Expired offers show `status: "expired"`.
- A rollback after the jackpot paid out (epoch moved) refunds the player from the house alone.
- Failover: the ledger's epoch goes out in `X-Ledger-Epoch` on every answer. A caller's
  `X-Ledger-Epoch` is only a claim (heard from `edge` and `replica` credentials; from others and
  anonymous callers it is ignored and counted): a claim above a primary's own epoch makes it ask
  its configured `peers`, and only a peer announcing itself primary at a higher epoch fences it
  (durably; 503 `not_primary`, readyz 503 `fenced`) — see `fencing`. `POST /admin/v1/unfence`
  lifts a fence with a journaled `unfence` entry (409 `not_fenced`, 409 `peer_is_primary`
  unless forced). A synchronous primary that gets no standby
  confirmation within `standby_ack_timeout_s` answers 503 `standby_unavailable` but keeps the
  entry (semi-sync: no acknowledged loss, at the price of refusing writes while no standby is
  up); that entry may be the diverged tail `croupier ledger compare` reports after a failover.
  A promoted standby does not itself wait for a standby until one is configured.
"""
