"""Reading another service's answer within a bound: aiohttp reads (and decompresses) a whole body
into memory, so an answer that says it is small, or inflates, could take any amount of it (200 KB
of gzip became 200 MB)."""

from __future__ import annotations

import aiohttp

CHUNK_BYTES = 64 * 1024


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body, decompressed; ClientPayloadError (a failed call) once it passes `limit`
    bytes, before the rest is read."""
    if resp.content_length is not None and resp.content_length > limit:
        raise aiohttp.ClientPayloadError(f"an answer of {resp.content_length} bytes, over {limit}")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise aiohttp.ClientPayloadError(f"an answer over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
