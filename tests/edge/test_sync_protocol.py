"""The sync protocol's entry reader: its shortcut for one-byte lengths reads what pycrdt's reader
reads, and leaves every other shape to it."""

from __future__ import annotations

import pytest
from pycrdt import read_message

from edge.crdt import protocol


def test_an_entry_s_message_reads_the_same_through_the_one_byte_length_shortcut():
    for size in (0, 1, 127, 128, 300, 5000):
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        for message in (protocol.step1(payload), protocol.step2(payload), protocol.update_message(payload)):
            assert protocol.parse(message) == (message[1], read_message(message[2:])) == (message[1], payload)
    trailing = protocol.step1(b"abc") + b"zz"  # a length that does not span the rest: the full reader
    assert protocol.parse(trailing)[1] == b"abc"


def test_a_step1_answer_is_the_same_when_asked_twice_and_a_malformed_vector_fails_each_time():
    older, newer = b"\x01\x07\x02", b"\x02\x07\x05\x09\x01"  # client 7 at 2; client 7 at 5 and 9 at 1
    assert protocol.answer_step1(newer, older) == protocol.Step1Answer(send_diff=True, ask=False)
    assert protocol.answer_step1(newer, older) == protocol.Step1Answer(send_diff=True, ask=False)
    assert protocol.answer_step1(older, newer) == protocol.Step1Answer(send_diff=False, ask=True)
    assert protocol.answer_step1(newer, newer) is protocol.IN_SYNC
    for _ in range(2):
        with pytest.raises(protocol.ProtocolError):
            protocol.answer_step1(newer, b"\x05\x01")
