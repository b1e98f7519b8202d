"""An in-process asyncio TCP fault proxy: the kernel here has no netem, so faults live in userspace.

One `FaultProxy` listens on 127.0.0.1 and forwards every connection to one upstream. Its `mode`
can be switched at any time; established connections obey the new mode on their next chunk:

- `pass`       forward as is
- `latency`    delay every chunk by `latency_s` ± `jitter_s` (seeded RNG, order kept per direction)
- `blackhole`  accept and read, forward nothing (both directions): the peer sees a hang. When the
               mode changes again, every connection that had bytes dropped is reset (RST): a TCP
               stream never resumes with a hole in it (a real network either delivers the bytes
               late or the connection dies), and an application talking over one may rely on that
- `reset`      drop every connection at once (RST) and refuse new ones the same way
- `slow_close` forward, but close by stalling the close for `latency_s`

Everything is bounded: `chunk_bytes` per read, `connections_max` open at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from dataclasses import dataclass, field

MODES = ("pass", "latency", "blackhole", "reset", "slow_close")


@dataclass
class FaultState:
    mode: str = "pass"
    latency_s: float = 0.0
    jitter_s: float = 0.0


@dataclass
class FaultProxy:
    upstream_host: str
    upstream_port: int
    name: str = "proxy"
    seed: int = 0
    chunk_bytes: int = 65536
    connections_max: int = 1024
    state: FaultState = field(default_factory=FaultState)
    port: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        # Connections (both ends) that dropped bytes in a blackhole: reset when it ends.
        self._holed: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def set_mode(self, mode: str, *, latency_s: float = 0.0, jitter_s: float = 0.0) -> None:
        assert mode in MODES, mode
        self.state = FaultState(mode, latency_s, jitter_s)
        if mode == "reset":
            self._reset_all()
        elif mode != "blackhole":
            holed, self._holed = self._holed, set()
            for pair in holed:
                for w in pair:
                    self._writers.discard(w)
                    _abort(w)

    def _reset_all(self) -> None:
        for w in list(self._writers):
            _abort(w)
        self._writers.clear()
        self._holed.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.state.mode == "reset" or len(self._writers) >= self.connections_max:
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            _abort(writer)
            return
        self._writers.update((writer, up_writer))
        pair = (writer, up_writer)
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer, pair)),
            asyncio.create_task(self._pipe(up_reader, writer, pair)),
        ]
        for t in pipes:
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        await asyncio.gather(*pipes, return_exceptions=True)
        self._holed.discard(pair)
        for w in (writer, up_writer):
            self._writers.discard(w)
            if self.state.mode == "slow_close":
                await asyncio.sleep(self.state.latency_s)
            w.close()

    async def _pipe(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while True:
                data = await src.read(self.chunk_bytes)
                if not data:
                    break
                st = self.state
                if st.mode == "blackhole":
                    self._holed.add(pair)  # this stream has a hole now: it must not carry on
                    continue
                if st.mode == "reset":
                    break
                if st.mode == "latency":
                    delay = st.latency_s + self._rng.uniform(-st.jitter_s, st.jitter_s)
                    await asyncio.sleep(max(0.0, delay))
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if self.state.mode == "reset":
                _abort(dst)
            elif dst.can_write_eof() and not dst.is_closing():
                with contextlib.suppress(ConnectionError, OSError):
                    dst.write_eof()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) so the other side sees a reset, not a clean close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
