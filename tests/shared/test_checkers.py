"""The history checker and journal fold catch what they claim to catch (synthetic histories)."""

from harness.chaos import Op, check_history
from harness.verify import duplicate_keys, fold_journal


def entry(seq, tx_id, postings, *, prev="0" * 64, outcome="committed", client="gs"):
    return {
        "sequence": seq,
        "epoch": 1,
        "prev_hash": prev,
        "hash": f"{seq:064x}",
        "transaction": {"id": tx_id, "client_id": client, "outcome": outcome},
        "postings": [{"account": a, "amount_minor": m, "currency": "EUR"} for a, m in postings],
    }


def chain(*entries):
    prev = "0" * 64
    for e in entries:
        e["prev_hash"], prev = prev, e["hash"]
    return list(entries)


def bet_op(key, outcome, seq=None, balance=None):
    op = Op("bet", key, {"id": key}, "eu", 0.0, outcome=outcome, status=201 if outcome == "ok" else 422)
    if seq is not None:
        op.answer = {"transaction": {"sequence": seq}, "balance": {"player_id": "p1", "balance_minor": balance}}
    return op


DEPOSIT = entry(1, "d1", [("cashier:EUR", -100), ("player:p1:EUR", 100)], client="cashier")
BET = entry(2, "b1", [("player:p1:EUR", -10), ("house:EUR", 10)])


def test_a_clean_history_passes():
    checks = check_history([bet_op("b1", "ok", 2, 90)], chain(dict(DEPOSIT), dict(BET)))
    assert all(c.ok for c in checks), checks


def test_an_acknowledged_write_missing_from_the_journal_fails():
    checks = check_history([bet_op("b1", "ok", 2, 90)], chain(dict(DEPOSIT)))
    assert not checks[0].ok and "journaled 0 times" in checks[0].detail


def test_a_wrong_answered_balance_fails():
    checks = check_history([bet_op("b1", "ok", 2, 95)], chain(dict(DEPOSIT), dict(BET)))
    assert not checks[0].ok and "answered balance 95" in checks[0].detail


def test_an_unknown_write_journaled_twice_fails():
    twice = entry(3, "b1", [("player:p1:EUR", -10), ("house:EUR", 10)])
    entries = chain(dict(DEPOSIT), dict(BET), twice)
    checks = check_history([bet_op("b1", "info")], entries)
    assert not checks[0].ok and "journaled 2 times" in checks[0].detail
    assert duplicate_keys(entries) == [("gs", "b1")]


def test_a_refused_write_that_was_committed_fails_but_a_journaled_rejection_passes():
    assert not check_history([bet_op("b1", "fail")], chain(dict(DEPOSIT), dict(BET)))[0].ok
    rejected = entry(2, "b1", [], outcome="rejected")
    assert check_history([bet_op("b1", "fail")], chain(dict(DEPOSIT), rejected))[0].ok


def test_fold_reports_negative_balances_unbalanced_postings_and_chain_breaks():
    overdraw = entry(2, "b1", [("player:p1:EUR", -200), ("house:EUR", 200)])
    _, problems = fold_journal(chain(dict(DEPOSIT), overdraw))
    assert any("negative balance player:p1:EUR at sequence 2" in p for p in problems)
    unbalanced = entry(2, "b1", [("player:p1:EUR", -10), ("house:EUR", 9)])
    _, problems = fold_journal(chain(dict(DEPOSIT), unbalanced))
    assert any("do not sum to zero at sequence 2" in p for p in problems)
    broken = chain(dict(DEPOSIT), dict(BET))
    broken[1]["prev_hash"] = "f" * 64
    _, problems = fold_journal(broken)
    assert any("chain break at sequence 2" in p for p in problems)


def test_conservation_balances_cash_in_against_what_is_held_and_flags_money_from_nowhere():
    from harness.verify import conservation

    entries = chain(dict(DEPOSIT), dict(BET))
    check = conservation(entries, [])
    assert check.ok and "EUR: in 100 = players 90 + house 10" in check.detail
    minted = entry(3, "m", [("house:EUR", 5)])
    assert not conservation(chain(dict(DEPOSIT), dict(BET), minted), []).ok


def test_demo_sync_lag_quantile_interpolates_like_promql_over_the_window_between_scrapes():
    from shared.metrics import histogram_quantile as quantile

    from harness.demo import lag_p99_since

    rows = [(0.01, 50.0), (0.1, 90.0), (0.25, 100.0), (float("inf"), 100.0)]
    assert quantile(rows, 0.5) == 0.01
    assert abs(quantile(rows, 0.99) - (0.1 + 0.15 * 9 / 10)) < 1e-9
    assert quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.99) is None
    later = [(0.01, 50.0), (0.1, 90.0), (0.25, 200.0), (float("inf"), 200.0)]  # 100 new, all in (0.1, 0.25]
    assert abs(lag_p99_since({"us": rows}, {"us": later})["us"] - (0.1 + 0.15 * 0.99)) < 1e-9


# --- failover: one acknowledging copy per epoch, nothing acknowledged lost ---------------------


def at(e, epoch):
    e = dict(e)
    e["epoch"] = epoch
    return e


def acked_bet(key, seq, epoch, *, by="eu", header=None):
    op = Op("bet", key, {"id": key}, "eu", 0.0, outcome="ok", status=201)
    op.answer = {"transaction": {"id": key, "sequence": seq, "epoch": epoch}}
    op.answered_by, op.epoch_header = by, header
    return op


def test_a_clean_failover_passes_the_failover_checks():
    from harness.chaos import check_failover

    old = chain(dict(DEPOSIT), dict(BET))
    new = chain(dict(DEPOSIT), dict(BET), at(entry(3, "b2", [("player:p1:EUR", -5), ("house:EUR", 5)]), 2))
    history = [acked_bet("b1", 2, 1), acked_bet("b2", 3, 2)]
    checks = check_failover(history, {"ledger": old, "ledger-standby": new}, "ledger-standby")
    assert all(c.ok for c in checks), checks
    assert "epochs [1, 2]" in checks[0].detail


def test_two_copies_journaling_one_sequence_differently_in_one_epoch_is_caught():
    from harness.chaos import check_failover

    a = chain(dict(DEPOSIT), dict(BET))
    b = chain(dict(DEPOSIT), entry(2, "b9", [("player:p1:EUR", -1), ("house:EUR", 1)]))
    b[1]["hash"] = "e" * 64
    checks = check_failover([], {"ledger": a, "ledger-standby": b}, "ledger")
    assert not checks[0].ok and "both journaled sequence 2 in epoch 1" in checks[0].detail


def test_an_ok_answer_naming_another_transactions_place_is_caught():
    from harness.chaos import check_failover

    journal = chain(dict(DEPOSIT), dict(BET))  # b1 at sequence 2, epoch 1
    checks = check_failover([acked_bet("ghost", 2, 1)], {"ledger": journal}, "ledger")
    assert not checks[0].ok and "acknowledged at sequence 2 in epoch 1, where ledger journaled b1" in checks[0].detail


def test_one_epoch_announced_by_two_acknowledging_copies_is_caught():
    from harness.chaos import check_failover

    journal = chain(dict(DEPOSIT), dict(BET))
    history = [acked_bet("b1", 2, 1, by="ledger", header=1), acked_bet("b1", 2, 1, by="ledger-standby", header=1)]
    checks = check_failover(history, {"ledger": journal, "ledger-standby": journal}, "ledger")
    assert not checks[0].ok and checks[0].detail == (
        "epoch 1 acknowledged new writes from ['ledger', 'ledger-standby'] (e.g. bet b1 by ledger, bet b1 by "
        "ledger-standby)"
    )
    history[1].answer["replayed"] = True  # a replay of a committed entry writes nothing new
    assert check_failover(history, {"ledger": journal, "ledger-standby": journal}, "ledger")[0].ok


def test_an_acknowledged_write_only_the_old_primary_has_is_lost():
    from harness.chaos import check_failover

    old = chain(dict(DEPOSIT), dict(BET))
    new = chain(dict(DEPOSIT))
    checks = check_failover([acked_bet("b1", 2, 1)], {"ledger": old, "ledger-standby": new}, "ledger-standby")
    assert checks[0].ok
    assert not checks[1].ok and "1 ok writes missing from ledger-standby, first bet b1" in checks[1].detail


def test_balances_of_players_whose_ids_contain_a_colon_are_checked_under_their_own_id():
    """Player ids may contain ":" (shared.ids): a wallet splits at its last ":", not its first."""
    deposit = entry(1, "d1", [("cashier:EUR", -100), ("player:p:1:EUR", 100)], client="cashier")
    bet = entry(2, "b1", [("player:p:1:EUR", -10), ("house:EUR", 10)])
    op = Op("bet", "b1", {"id": "b1"}, "eu", 0.0, outcome="ok", status=201)
    op.answer = {"transaction": {"sequence": 2}, "balance": {"player_id": "p:1", "balance_minor": 95}}
    checks = check_history([op], chain(deposit, bet))
    assert not checks[0].ok and "answered balance 95, journal 90" in checks[0].detail


def test_the_harness_reads_account_names_as_the_ledger_builds_them():
    from core_ledger.domain.accounts import jackpot_account, player_account, system_account
    from harness.account_names import Wallet, malformed_wallet, wallet_balances, wallet_of

    for player_id in ("p1", "p:1", "player:x:", "a:b:c"):
        assert wallet_of(player_account(player_id, "EUR")) == Wallet(player_id, "EUR")
    assert wallet_of(system_account("house", "EUR")) is None and wallet_of(jackpot_account("player:j")) is None
    assert [malformed_wallet(a) for a in ("player:EUR", "player::EUR", "player:p:", "house:EUR")] == [
        True,
        True,
        True,
        False,
    ]
    assert wallet_balances({"player:p:1:EUR": 5, "house:EUR": -5}) == {Wallet("p:1", "EUR"): 5}


def test_fold_reports_a_malformed_player_account():
    odd = entry(1, "d1", [("cashier:EUR", -100), ("player:EUR", 100)], client="cashier")
    _, problems = fold_journal([odd])
    assert any("malformed player account 'player:EUR' at sequence 1" in p for p in problems)
