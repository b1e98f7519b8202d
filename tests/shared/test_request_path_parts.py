"""The pieces every request runs through, made cheaper (issue 12) without changing what they do:
the principal of a token (made once per accepted entry, never surviving a reload that changes or
removes it), the request-duration series (bound once per route, method and status), fresh request
ids (unique, also across a fork)."""

from __future__ import annotations

import os
import random

import pytest
from prometheus_client import CollectorRegistry

from shared import auth, request_ids
from shared.errors import Unauthenticated
from shared.metrics import HttpMetrics


def test_a_reload_that_changes_a_tokens_role_or_removes_it_is_seen_by_the_next_request():
    old, new = auth.new_token(), auth.new_token()
    store = auth.TokenStore([auth.TokenEntry("gs-1", "game_server", auth.hash_token(old))])
    assert store.authenticate(f"Bearer {old}") == auth.Principal("gs-1", "game_server")
    # The same token, now another role and name (an operator's edit): the old principal is gone.
    store.replace([auth.TokenEntry("ops", "admin_read", auth.hash_token(old).upper())])
    assert store.authenticate(f"Bearer {old}") == auth.Principal("ops", "admin_read")
    store.replace([auth.TokenEntry("gs-2", "game_server", auth.hash_token(new))])  # rotated
    with pytest.raises(Unauthenticated):
        store.authenticate(f"Bearer {old}")
    assert store.authenticate(f"Bearer {new}") == auth.Principal("gs-2", "game_server")


def test_what_a_liar_presents_is_refused():
    token = auth.new_token()
    digest = auth.hash_token(token)
    store = auth.TokenStore([auth.TokenEntry("e", "edge", digest)])
    for lie in (f"Bearer {digest}", f"Bearer {token.upper()}", f"bearer {token}", f"Bearer {token[:-1]}", "Bearer "):
        with pytest.raises(Unauthenticated):
            store.authenticate(lie)
    assert store.authenticate(f"Bearer  {token} ") == auth.Principal("e", "edge")  # as before: stripped


def test_the_request_duration_series_are_bound_once_and_counted_apart():
    registry = CollectorRegistry()
    metrics = HttpMetrics(registry)
    bets = metrics.request_duration("/v1/bets", "POST", 201)
    assert metrics.request_duration("/v1/bets", "POST", 201) is bets
    for _ in range(3):
        bets.observe(0.002)
    metrics.request_duration("/v1/bets", "POST", 400).observe(0.001)

    def count(status: str) -> float | None:
        labels = {"route": "/v1/bets", "method": "POST", "status": status}
        return registry.get_sample_value("http_request_duration_seconds_count", labels)

    assert (count("201"), count("400"), count("503")) == (3.0, 1.0, None)


def test_fresh_request_ids_are_valid_distinct_and_differ_in_a_forked_child():
    ids = {request_ids.new() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == 32 and request_ids.is_valid(i) for i in ids)
    int(next(iter(ids)), 16)  # hex
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out at once
        os.write(write, request_ids.new().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != request_ids.new() and child not in ids


def test_seeding_the_process_wide_generator_does_not_replay_request_ids():
    random.seed(12345)
    first = request_ids.new()
    random.seed(12345)
    assert request_ids.new() != first
