"""The fault proxy forwards, delays, blackholes and resets TCP traffic on loopback."""

import asyncio
import time

import pytest

from harness.faultproxy import FaultProxy


@pytest.fixture
async def echo_and_proxy():
    async def echo(reader, writer):
        try:
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    proxy = FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1], seed=7)
    await proxy.start()
    yield proxy
    await proxy.stop()
    server.close()
    await server.wait_closed()


async def roundtrip(port: int, payload: bytes, timeout_s: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout_s)
    finally:
        writer.close()


async def test_pass_forwards_bytes_unchanged(echo_and_proxy):
    assert await roundtrip(echo_and_proxy.port, b"hello") == b"hello"


async def test_latency_delays_each_direction(echo_and_proxy):
    echo_and_proxy.set_mode("latency", latency_s=0.1, jitter_s=0.0)
    started = time.monotonic()
    assert await roundtrip(echo_and_proxy.port, b"slow") == b"slow"
    assert time.monotonic() - started >= 0.2  # 0.1 s each way


async def test_blackhole_stalls_without_closing(echo_and_proxy):
    echo_and_proxy.set_mode("blackhole")
    with pytest.raises(asyncio.TimeoutError):
        await roundtrip(echo_and_proxy.port, b"lost", timeout_s=0.3)
    echo_and_proxy.set_mode("pass")
    assert await roundtrip(echo_and_proxy.port, b"back") == b"back"


async def test_a_connection_that_lost_bytes_in_a_blackhole_is_reset_when_it_ends(echo_and_proxy):
    # TCP never resumes a stream with a hole in it: bytes are delivered late or the connection dies.
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_and_proxy.port)
    try:
        echo_and_proxy.set_mode("blackhole")
        writer.write(b"dropped")
        await writer.drain()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(reader.readexactly(1), 0.3)
        echo_and_proxy.set_mode("pass")
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            writer.write(b"after")
            await writer.drain()
            await asyncio.wait_for(reader.readexactly(len(b"after")), 2)
    finally:
        writer.close()
    assert await roundtrip(echo_and_proxy.port, b"new") == b"new"


async def test_a_connection_idle_through_a_blackhole_survives_it(echo_and_proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_and_proxy.port)
    try:
        writer.write(b"a")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(1), 2) == b"a"
        echo_and_proxy.set_mode("blackhole")
        await asyncio.sleep(0.1)
        echo_and_proxy.set_mode("pass")
        writer.write(b"b")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(1), 2) == b"b"
    finally:
        writer.close()


async def test_reset_drops_open_connections_and_refuses_new_ones(echo_and_proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_and_proxy.port)
    writer.write(b"x")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(1), 2) == b"x"
    echo_and_proxy.set_mode("reset")
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        writer.write(b"y")
        await writer.drain()
        await asyncio.wait_for(reader.readexactly(1), 2)
    writer.close()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await roundtrip(echo_and_proxy.port, b"z")
