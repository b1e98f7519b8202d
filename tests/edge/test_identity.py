"""CRDT client ids: the owner edge can be read back from any id, starts get later ids, and an id
never falls back to one the local store already holds."""

from __future__ import annotations

import pytest

from edge.crdt.identity import (
    CLIENT_ID_LIMIT,
    Owners,
    after_stored,
    check_distinct_tags,
    fresh_client_id,
)

T0 = 1.8e9


def test_each_start_has_a_later_id_that_still_names_its_edge():
    owners = Owners(("eu", "us", "apac"))
    ids = [fresh_client_id("eu", T0 + 0.1 * i) for i in range(5)]
    assert ids == sorted(set(ids)) and all(1 <= i < CLIENT_ID_LIMIT for i in ids)
    assert {owners.owner(i) for i in ids} == {"eu"}
    assert owners.owner(fresh_client_id("us", T0)) == "us"
    assert owners.owner(fresh_client_id("latam", T0)) is None and owners.owner(1) is None


def test_an_id_never_falls_back_to_an_incarnation_the_store_holds():
    stored = {fresh_client_id("eu", T0 + 5), fresh_client_id("us", T0 + 99)}
    stepped_back = fresh_client_id("eu", T0)  # the wall clock went back, or a restart within 0.1 s
    later = after_stored(stepped_back, stored)
    assert later == fresh_client_id("eu", T0 + 5) + 1 and Owners(("eu", "us")).owner(later) == "eu"
    assert after_stored(fresh_client_id("eu", T0 + 6), stored) == fresh_client_id("eu", T0 + 6)


def test_colliding_tags_are_refused():
    ids = [f"e{i}" for i in range(2000)]  # 16-bit tags: some pair among 2000 ids collides
    with pytest.raises(ValueError, match="share a CRDT client tag"):
        check_distinct_tags(ids)
