"""The byzantine peer's lies are well-formed frames of the edges' own protocol that say exactly
what each lie claims (checked by decoding them with `edge.crdt.protocol`, no network)."""

from __future__ import annotations

import random
from typing import Any

import aiohttp
import pytest
from pycrdt import Doc, Map

from edge.crdt import protocol
from harness.byzantine import (
    FAKE_JACKPOT,
    FOREIGN_EDGE,
    FORGED_MINOR,
    FRAME_BYTES_MAX,
    JACKPOT_DOC,
    LIES,
    ByzantinePeer,
)

SLOT = {"epoch": 1, "p": 70, "n": 5, "seed": 100_000, "currency": "EUR", "ts": 1.0}


def target_doc() -> Doc:
    doc: Doc = Doc(client_id=1)
    slots = doc.get("slots", type=Map)
    slots["eu"] = dict(SLOT)
    slots["us"] = {**SLOT, "p": 30}
    return doc


class FakeSync:
    """The target's side of `/v1/sync`: answers the liar's STEP1 with its document (STEP2)."""

    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self.sent: list[bytes] = []

    async def send_bytes(self, frame: bytes) -> None:
        self.sent.append(frame)

    async def receive(self) -> Any:
        answer = protocol.encode_frame([(JACKPOT_DOC, protocol.step2(self.doc.get_update()))])
        return aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, answer, None)


class Edges:
    edge_ids = ("eu", "us", "apac")


async def lie_frames(lie: str) -> tuple[list[tuple[str, bytes]], list[bytes]]:
    peer = ByzantinePeer(Edges(), random.Random(1))  # type: ignore[arg-type]  # a stand-in with only the edge ids
    frames = await peer._frames(lie, FakeSync(target_doc()), "apac", protocol)
    entries = [e for f in frames if len(f) <= FRAME_BYTES_MAX for e in protocol.decode_frame(f, protocol.Limits())]
    return entries, frames


def applied(entries: list[tuple[str, bytes]], name: str, base: Doc | None = None) -> dict[str, Any]:
    doc = base if base is not None else Doc()
    for entry, message in entries:
        if entry == name:
            doc.apply_update(protocol.parse(message)[1])
    return dict(doc.get("slots", type=Map).items())


@pytest.mark.parametrize("lie", ["forge_slot", "impersonate", "foreign_slot"])
async def test_slot_lies_overwrite_or_add_a_slot_on_top_of_the_targets_document(lie: str) -> None:
    entries, _ = await lie_frames(lie)
    after = applied(entries, JACKPOT_DOC, target_doc())  # causally after what the target holds
    before = dict(target_doc().get("slots", type=Map).items())
    changed = {k for k in after if after[k] != before.get(k)}
    assert len(changed) == 1, (before, after)
    owner = changed.pop()
    if lie == "foreign_slot":
        assert owner == FOREIGN_EDGE and after[owner]["p"] == FORGED_MINOR
    else:
        assert owner in Edges.edge_ids and after[owner]["p"] == before.get(owner, {"p": 0})["p"] + FORGED_MINOR
        assert lie != "impersonate" or owner == "apac"


async def test_bad_values_write_unreadable_epoch_and_ts() -> None:
    entries, _ = await lie_frames("bad_values")
    assert applied(entries, JACKPOT_DOC, target_doc())["apac"] == {"epoch": "x"}
    bonus = next(name for name, _ in entries if name.startswith("bonus/"))
    assert applied(entries, bonus)["apac"]["ts"] == "abc"


async def test_unknown_doc_and_oversized_frames() -> None:
    entries, _ = await lie_frames("unknown_doc")
    assert [name for name, _ in entries] == [f"jackpot/{FAKE_JACKPOT}"]
    assert applied(entries, f"jackpot/{FAKE_JACKPOT}")["apac"]["p"] == FORGED_MINOR
    entries, frames = await lie_frames("oversized")
    assert len(frames) == 2 and len(frames[0]) <= FRAME_BYTES_MAX < len(frames[1])
    assert entries[0][0].startswith("session/") and len(entries[0][1]) > FRAME_BYTES_MAX - 8192
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_frame(frames[1], protocol.Limits())
    assert set(LIES) == {"forge_slot", "foreign_slot", "bad_values", "unknown_doc", "oversized", "impersonate"}
