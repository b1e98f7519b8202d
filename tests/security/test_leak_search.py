"""The leak search itself: it finds a credential in an answer or a written file wherever it hides, and
a `Client` fails the very request whose answer holds one (so no test has to run after the others to
catch it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.cluster_client import Client
from tests.support.leaks import leaks_in_bodies, leaks_in_files

TOKENS = {"admin_write": "secret-admin-write-token", "peer-eu": "secret-peer-token-of-eu"}


@dataclass
class FakeCluster:
    """What a `Client` reads from a cluster: its credentials and the URL of each service."""

    base_url: str
    tokens: dict[str, str] = field(default_factory=lambda: dict(TOKENS))
    edge_ids: tuple[str, ...] = ("eu", "us")

    def url(self, service: str) -> str:
        return self.base_url


def test_a_credential_is_found_in_answers_and_written_files_but_not_in_its_two_homes(tmp_path: Path) -> None:
    bodies = [("http://x/a", 200, b"fine"), ("http://x/b", 401, b'{"detail": "secret-peer-token-of-eu"}')]
    assert leaks_in_bodies(bodies, TOKENS) == ["peer-eu in the 401 body of http://x/b"]
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "admin.token").write_text(TOKENS["admin_write"])
    (tmp_path / "cluster.json").write_text(str(TOKENS))
    (tmp_path / "eu").mkdir()
    (tmp_path / "eu" / "edge.toml").write_text('sha256 = "ab12"')
    assert leaks_in_files(tmp_path, TOKENS) == []
    (tmp_path / "eu" / "eu.log").write_text('{"event": "start", "token": "secret-admin-write-token"}\n')
    assert leaks_in_files(tmp_path, TOKENS) == ["admin_write in eu/eu.log"]


async def test_a_client_fails_the_request_whose_answer_holds_a_credential(aiohttp_server: Any) -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Authorization", "none"))

    app = web.Application()
    app.router.add_get("/echo", echo)
    server = await aiohttp_server(app, host="127.0.0.1")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        client = Client(FakeCluster(str(server.make_url("")).rstrip("/")), http)  # type: ignore[arg-type]  # a stand-in cluster
        assert (await client.send("eu", "GET", "/echo", token="not-a-credential")).status == 200
        with pytest.raises(AssertionError, match=r"\['admin_write'\] in the 200 answer of GET"):
            await client.as_role("ledger", "admin_write", "GET", "/echo")
    assert [status for _, status, _ in client.bodies] == [200, 200]
