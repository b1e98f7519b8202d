"""The wire between the ledger process and its front processes (core_ledger/fronts.py starts them,
core_ledger/front_app.py is one): length-prefixed orjson frames over a private socket pair.

A front serves the money routes' HTTP (parsing, validation, rendering, logging) on a second core
and sends the commands here; the ledger process judges and commits them, as it would its own.

From a front:
- `["submit", n, authorization, epoch_claim, [[type, request, principal, client_id, id, via], ...]]`
- `["observed", [[route, method, status, seconds], ...]]`: requests it answered (for the HTTP metrics)
- `["spans", {result: count}]`: spans its tracer handed to the exporter since the last (ok, failed)
- `["connections", [open, refused]]`: client connections it holds, and refused since the last

From the ledger:
- `["results", n, epoch, [[status, body] | ["error", code, detail, extra, retry_after_s], ...]]`
- `["refused", n, epoch, ["error", code, detail, extra, retry_after_s]]`: the whole submit refused
- `["tokens", [[name, role, sha256], ...]]`: the credentials accepted now (hashes, never tokens)
- `["epoch", epoch]`: the ledger's epoch, at the start and whenever it changes (for the answers a
  front gives without asking the ledger: a 401, a 400)

Each side checks every frame's shape (`ChannelError` otherwise): a front is this ledger's own code
on a channel no other process holds, yet the ledger takes nothing from it on trust that the front
could not prove. It authenticates the forwarded `Authorization` itself, and authorizes each
command against that principal (core_ledger/fronts.py): a front can act only as a caller who
presented a valid token to it.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson

from shared.auth import ROLES, TokenEntry
from shared.errors import CroupierError, Unavailable, error_from_code
from shared.tracing import EXPORT_RESULTS

from core_ledger.domain import Command

LENGTH = struct.Struct("!I")
FRAME_BYTES_MAX = 16 * 1024 * 1024  # a submit holds one request's commands: far above body_bytes_max

Result = tuple[int, dict[str, Any]] | CroupierError


class ChannelError(Exception):
    """A frame that breaks the protocol: the channel is closed (and its front restarted)."""


def frame(message: list[Any]) -> bytes:
    body = orjson.dumps(message)
    if len(body) > FRAME_BYTES_MAX:
        raise ChannelError(f"a frame of {len(body)} bytes is over {FRAME_BYTES_MAX}")
    return LENGTH.pack(len(body)) + body


class Outbox:
    """The ledger's frames to one front, sent together once per turn of the event loop: the answers
    of one commit group leave in one write, not one write (and one wake-up of the front) each.
    A front's submits leave at once instead: held for a turn, bets waited longer (measured)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._frames: list[bytes] = []

    def send(self, message: list[Any]) -> None:
        if not self._frames:
            asyncio.get_running_loop().call_soon(self._flush)
        self._frames.append(frame(message))

    @property
    def buffered_bytes(self) -> int:
        """Written but not yet taken by the front (a front that stops reading is stuck)."""
        return self.writer.transport.get_write_buffer_size()

    def _flush(self) -> None:
        data, self._frames = b"".join(self._frames), []
        if not self.writer.is_closing():
            self.writer.write(data)


READ_BYTES = 256 * 1024  # taken from the socket at once: every frame that came with them is parsed


class FrameReader:
    """The frames coming over a channel, parsed from what each read of the socket brought: the
    answers of a whole commit group (or a turn's submits) cost one read, not two per frame."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._buffer = bytearray()
        self._frames: list[list[Any]] = []

    async def next_frames(self) -> list[list[Any]]:
        """Every frame that has arrived, at least one (IncompleteReadError at the channel's end)."""
        while not self._frames:
            await self._fill()
        frames, self._frames = self._frames, []
        return frames

    async def next(self) -> list[Any]:
        """The next frame alone."""
        while not self._frames:
            await self._fill()
        return self._frames.pop(0)

    async def _fill(self) -> None:
        chunk = await self._reader.read(READ_BYTES)
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(self._buffer), None)
        buffer = self._buffer
        buffer += chunk
        start = 0
        while len(buffer) - start >= LENGTH.size:
            (size,) = LENGTH.unpack_from(buffer, start)
            if size > FRAME_BYTES_MAX:
                raise ChannelError(f"a frame of {size} bytes is over {FRAME_BYTES_MAX}")
            end = start + LENGTH.size + size
            if end > len(buffer):
                break
            self._frames.append(_message(buffer[start + LENGTH.size : end]))
            start = end
        del buffer[:start]


def _message(body: bytearray) -> list[Any]:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ChannelError(f"a frame is not JSON: {e}") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise ChannelError("a frame is not a list starting with its kind")
    return message


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ChannelError(f"{what} is not a string")
    return value


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ChannelError(f"{what} is not an integer")
    return value


def _optional_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


# --- commands, front -> ledger ---


def command_fields(command: Command) -> list[Any]:
    client_id, id_ = command.key if command.key is not None else (None, None)
    return [command.type, command.request, command.principal, client_id, id_, command.via]


def command_of(fields: Any) -> Command:
    if not isinstance(fields, list) or len(fields) != 6:
        raise ChannelError("a command is not a list of 6 fields")
    tx_type, request, principal, client_id, id_, via = fields
    if not isinstance(request, dict):
        raise ChannelError("a command's request is not an object")
    return Command(
        _str(tx_type, "a command's type"),
        request,
        _str(principal, "a command's principal"),
        (_str(client_id, "a command's client_id"), _str(id_, "a command's id")),
        _optional_str(via, "a command's via"),
    )


def submit_message(n: int, authorization: str, epoch_claim: int | None, commands: list[Command]) -> list[Any]:
    return ["submit", n, authorization, epoch_claim, [command_fields(c) for c in commands]]


def submit_of(message: list[Any]) -> tuple[int, str, int | None, list[Command]]:
    """(n, the forwarded Authorization, the caller's epoch claim or None, the commands)."""
    if len(message) != 5 or not isinstance(message[4], list) or not message[4]:
        raise ChannelError("a submit is not [submit, n, authorization, epoch claim, commands]")
    claim = None if message[3] is None else _int(message[3], "an epoch claim")
    return (
        _int(message[1], "a submit's n"),
        _str(message[2], "an authorization"),
        claim,
        [command_of(c) for c in message[4]],
    )


# --- results, ledger -> front ---


def error_fields(error: CroupierError) -> list[Any]:
    retry_after_s = error.retry_after_s if isinstance(error, Unavailable) else None
    return ["error", error.code, error.detail, error.extra, retry_after_s]


def error_of(fields: Any) -> CroupierError:
    if not isinstance(fields, list) or len(fields) != 5 or fields[0] != "error" or not isinstance(fields[3], dict):
        raise ChannelError("an error is not [error, code, detail, extra, retry_after_s]")
    extra = dict(fields[3])
    if fields[4] is not None:
        extra["retry_after_s"] = _int(fields[4], "a retry_after_s")
    return error_from_code(_str(fields[1], "an error's code"), _str(fields[2], "an error's detail"), **extra)


def result_fields(result: Result) -> list[Any]:
    if isinstance(result, CroupierError):
        return error_fields(result)
    status, body = result
    return [status, body]


def result_of(fields: Any) -> Result:
    if isinstance(fields, list) and fields and fields[0] == "error":
        return error_of(fields)
    if not isinstance(fields, list) or len(fields) != 2 or not isinstance(fields[1], dict):
        raise ChannelError("a result is not [status, body]")
    return _int(fields[0], "a result's status"), fields[1]


def results_message(n: int, epoch: int, results: list[Result]) -> list[Any]:
    return ["results", n, epoch, [result_fields(r) for r in results]]


def refused_message(n: int, epoch: int, error: CroupierError) -> list[Any]:
    return ["refused", n, epoch, error_fields(error)]


def answer_of(message: list[Any]) -> tuple[int, int, list[Result] | CroupierError]:
    """(n, the ledger's epoch, the results or the whole submit's refusal) of a results/refused frame."""
    if len(message) != 4:
        raise ChannelError(f"a {message[0]} frame is not [kind, n, epoch, body]")
    n, epoch = _int(message[1], "an answer's n"), _int(message[2], "an answer's epoch")
    if message[0] == "refused":
        return n, epoch, error_of(message[3])
    if not isinstance(message[3], list):
        raise ChannelError("results are not a list")
    return n, epoch, [result_of(r) for r in message[3]]


# --- credentials and observed requests ---


def tokens_message(entries: tuple[TokenEntry, ...]) -> list[Any]:
    return ["tokens", [[e.name, e.role, e.sha256] for e in entries]]


def tokens_of(message: list[Any]) -> list[TokenEntry]:
    if len(message) != 2 or not isinstance(message[1], list):
        raise ChannelError("tokens are not [tokens, entries]")
    out = []
    for e in message[1]:
        if not isinstance(e, list) or len(e) != 3:
            raise ChannelError("a token entry is not [name, role, sha256]")
        role = _str(e[1], "a token's role")
        if role not in ROLES:
            raise ChannelError(f"unknown role {role!r}")
        out.append(TokenEntry(_str(e[0], "a token's name"), role, _str(e[2], "a sha256")))
    return out


Observation = tuple[str, str, int, float]  # route template, method, status, seconds


def observed_message(observations: list[Observation]) -> list[Any]:
    return ["observed", [list(o) for o in observations]]


def observed_of(message: list[Any]) -> list[Observation]:
    if len(message) != 2 or not isinstance(message[1], list):
        raise ChannelError("observations are not [observed, list]")
    out = []
    for o in message[1]:
        if not isinstance(o, list) or len(o) != 4 or not isinstance(o[3], int | float) or isinstance(o[3], bool):
            raise ChannelError("an observation is not [route, method, status, seconds]")
        out.append((_str(o[0], "a route"), _str(o[1], "a method"), _int(o[2], "a status"), float(o[3])))
    return out


SPAN_COUNT_MAX = 10**9  # spans of one report at most: far above what 0.25 s can export


def spans_message(counts: dict[str, int]) -> list[Any]:
    return ["spans", counts]


def spans_of(message: list[Any]) -> dict[str, int]:
    """Counts by export result; only the results `shared/tracing.py` counts."""
    if len(message) != 2 or not isinstance(message[1], dict):
        raise ChannelError("span counts are not [spans, {result: count}]")
    counts = message[1]
    for result, count in counts.items():
        if result not in EXPORT_RESULTS:
            raise ChannelError(f"unknown span export result {result!r}")
        if not 0 <= _int(count, "a span count") <= SPAN_COUNT_MAX:
            raise ChannelError("a span count is out of bounds")
    return counts


CONNECTION_COUNT_MAX = 10**9  # far above any http_connections_max


def connections_message(open_now: int, refused: int) -> list[Any]:
    """A front's client connections open now, and those it refused since its last report."""
    return ["connections", [open_now, refused]]


def connections_of(message: list[Any]) -> tuple[int, int]:
    if len(message) != 2 or not isinstance(message[1], list) or len(message[1]) != 2:
        raise ChannelError("connection counts are not [connections, [open, refused]]")
    open_now, refused = (_int(n, "a connection count") for n in message[1])
    if not (0 <= open_now <= CONNECTION_COUNT_MAX and 0 <= refused <= CONNECTION_COUNT_MAX):
        raise ChannelError("a connection count is out of bounds")
    return open_now, refused


def epoch_message(epoch: int) -> list[Any]:
    return ["epoch", epoch]


def epoch_of(message: list[Any]) -> int:
    if len(message) != 2 or _int(message[1], "an epoch") < 0:
        raise ChannelError("an epoch is not [epoch, a non-negative integer]")
    return int(message[1])
