"""The edge-to-edge sync protocol as pure functions over bytes (no I/O), after pycrdt's `_sync.py`.

A frame (one websocket binary message) carries many entries, each `var_string(doc name)` +
`var_bytes(y-sync message)`, so one round trip serves many documents. The y-sync messages are
pycrdt's: SYNC_STEP1 carries a state vector, SYNC_STEP2 and SYNC_UPDATE carry an update.

On a STEP1 a replica answers with STEP2 (the update the sender lacks) when it holds items the
sender's state vector does not cover, and with its own STEP1 when the sender holds items it lacks
(that is how a document known only to the sender is pulled). State vectors are compared
numerically, so the answer needs no document in memory when nothing differs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pycrdt import Decoder, Encoder, YMessageType, YSyncMessageType, read_message, write_message

from edge.crdt import yupdate

EMPTY_STATE_VECTOR = b"\x00"


@dataclass(frozen=True)
class Limits:
    frame_bytes_max: int = 1 << 20
    entries_per_frame_max: int = 4096


class ProtocolError(ValueError):
    pass


def step1(state_vector: bytes) -> bytes:
    return bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP1]) + write_message(state_vector)


def step2(update: bytes) -> bytes:
    return bytes([YMessageType.SYNC, YSyncMessageType.SYNC_STEP2]) + write_message(update)


def update_message(update: bytes) -> bytes:
    return bytes([YMessageType.SYNC, YSyncMessageType.SYNC_UPDATE]) + write_message(update)


def parse(message: bytes) -> tuple[int, bytes]:
    """(y-sync message type, payload) of one entry's message."""
    if len(message) < 3 or message[0] != YMessageType.SYNC or message[1] > YSyncMessageType.SYNC_UPDATE:
        raise ProtocolError("not a y-sync message")
    if message[2] < 0x80 and len(message) == 3 + message[2]:  # a one-byte length, exactly: most entries
        return message[1], message[3:]
    return message[1], read_message(message[2:])


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """client id -> clock (number of items seen from that client). Read with the Yjs update
    reader (`edge.crdt.yupdate`: bounded var_uints, client ids remembered), which every STEP1
    answer needs twice: pycrdt's Decoder reads byte by byte in Python."""
    try:
        return yupdate.state_vector(state_vector, trailing=True)
    except yupdate.MalformedUpdate:
        raise ProtocolError("malformed state vector") from None


def items_ahead(mine: dict[int, int], theirs: dict[int, int]) -> int:
    """How many items `mine` holds that `theirs` does not."""
    return sum(max(0, clock - theirs.get(client, 0)) for client, clock in mine.items())


@dataclass(frozen=True)
class Step1Answer:
    send_diff: bool  # answer STEP2 with what the sender lacks
    ask: bool  # answer STEP1 with our own state vector


IN_SYNC = Step1Answer(send_diff=False, ask=False)


def answer_step1(local_sv: bytes, remote_sv: bytes) -> Step1Answer:
    if local_sv == remote_sv:  # the same bytes, the same vector (the common case): nothing to decode
        return IN_SYNC
    return _compare(local_sv, remote_sv)


@functools.lru_cache(maxsize=1024)
def _compare(local_sv: bytes, remote_sv: bytes) -> Step1Answer:
    """Remembered: the receive path asks once to know which documents to load and again to
    answer, and a malformed vector raises (not cached) both times."""
    mine, theirs = decode_state_vector(local_sv), decode_state_vector(remote_sv)
    return Step1Answer(items_ahead(mine, theirs) > 0, items_ahead(theirs, mine) > 0)


def encode_frame(entries: list[tuple[str, bytes]]) -> bytes:
    enc = Encoder()
    for name, message in entries:
        enc.write_var_string(name)
        enc.stream.append(write_message(message))
    return enc.to_bytes()


def decode_frame(frame: bytes, limits: Limits) -> list[tuple[str, bytes]]:
    if len(frame) > limits.frame_bytes_max:
        raise ProtocolError("frame too large")
    decoder = Decoder(frame)
    out: list[tuple[str, bytes]] = []
    try:
        while decoder.length > 0:
            if len(out) >= limits.entries_per_frame_max:
                raise ProtocolError("too many entries in a frame")
            name = decoder.read_var_string()
            message = decoder.read_message()
            if not name or message is None or decoder.length < 0:
                raise ProtocolError("truncated entry")
            out.append((name, message))
    except (IndexError, RuntimeError, UnicodeDecodeError):
        raise ProtocolError("malformed frame") from None
    return out


class FrameBuilder:
    """Packs entries into frames that respect the limits."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._entries: list[tuple[str, bytes]] = []
        self._bytes = 0
        self.frames: list[bytes] = []

    def add(self, name: str, message: bytes) -> None:
        size = len(name) + len(message) + 10
        assert size <= self._limits.frame_bytes_max, "one entry larger than a frame"
        if (
            self._bytes + size > self._limits.frame_bytes_max
            or len(self._entries) >= self._limits.entries_per_frame_max
        ):
            self.flush()
        self._entries.append((name, message))
        self._bytes += size

    def flush(self) -> None:
        if self._entries:
            self.frames.append(encode_frame(self._entries))
            self._entries, self._bytes = [], 0
