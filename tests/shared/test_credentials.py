"""CredentialReloader: all-or-nothing reloads of accepted tokens and presented token files,
on demand (SIGHUP) and when a watched file changes; a bad file keeps the old credentials."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from shared.auth import TokenEntry, TokenStore, hash_token
from shared.config import ConfigError
from shared.credentials import CredentialMetrics, CredentialReloader, FileSecret, SecretFileError
from shared.errors import Unauthenticated

from core_ledger.config import reload_tokens


def bearer(token: str) -> str:
    return f"Bearer {token}"


def write_config(path: Path, *tokens: str) -> None:
    rows = "".join(f'[[tokens]]\nname = "{t}"\nrole = "edge"\nsha256 = "{hash_token(t)}"\n' for t in tokens)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("[ledger]\n" + rows)
    tmp.replace(path)


def make(tmp_path: Path, interval_s: float = 2.0) -> tuple[CredentialReloader, Path, FileSecret, CollectorRegistry]:
    config, secret_path = tmp_path / "ledger.toml", tmp_path / "replica.token"
    write_config(config, "old")
    secret_path.write_text("replica-1\n")
    registry = CollectorRegistry()
    store = TokenStore(reload_tokens(config))
    secret = FileSecret(secret_path)
    reloader = CredentialReloader(
        store,
        CredentialMetrics(registry),
        load_tokens=lambda: reload_tokens(config),
        secrets=[secret],
        watched=[config],
        interval_s=interval_s,
    )
    return reloader, config, secret, registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_a_reload_applies_new_tokens_and_secrets_and_the_removed_token_stops_working(tmp_path: Path) -> None:
    reloader, config, secret, registry = make(tmp_path)
    assert reloader.tokens.authenticate(bearer("old")).name == "old" and secret.value == "replica-1"
    write_config(config, "new")
    secret.path.write_text("replica-2")
    assert reloader.reload("sighup") is True
    assert reloader.tokens.authenticate(bearer("new")).name == "new"
    with pytest.raises(Unauthenticated):
        reloader.tokens.authenticate(bearer("old"))
    assert secret.value == "replica-2" and "replica" not in repr(secret).replace("replica.token", "")
    assert sample(registry, "credential_reloads_total", result="ok") == 1
    assert sample(registry, "credential_reload_failing") == 0


@pytest.mark.parametrize(
    "breakage", ["bad_token_entry", "unreadable_config", "tokens_not_tables", "empty_secret", "missing_secret"]
)
def test_a_bad_file_keeps_every_old_credential_and_is_counted(tmp_path: Path, breakage: str) -> None:
    reloader, config, secret, registry = make(tmp_path)
    write_config(config, "new")  # a good token change that must not be applied half
    if breakage == "bad_token_entry":
        config.write_text(config.read_text() + '[[tokens]]\nname = "x"\nrole = "root"\nsha256 = "00"\n')
    elif breakage == "unreadable_config":
        config.write_text("[ledger\n")
    elif breakage == "tokens_not_tables":
        config.write_text("tokens = [1]\n[ledger]\n")
    elif breakage == "empty_secret":
        secret.path.write_text("\n")
    else:
        secret.path.unlink()
    assert reloader.reload("sighup") is False
    assert reloader.tokens.authenticate(bearer("old")).name == "old"
    with pytest.raises(Unauthenticated):
        reloader.tokens.authenticate(bearer("new"))
    assert secret.value == "replica-1"
    assert sample(registry, "credential_reloads_total", result="error") == 1
    assert sample(registry, "credential_reload_failing") == 1
    write_config(config, "new")
    secret.path.write_text("replica-2")
    assert reloader.reload("sighup") is True and sample(registry, "credential_reload_failing") == 0


def test_secret_files_must_be_readable_and_non_empty(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match="cannot read"):
        FileSecret(tmp_path / "none")
    (tmp_path / "empty").write_text(" \n")
    with pytest.raises(SecretFileError, match="empty"):
        FileSecret(tmp_path / "empty")
    assert issubclass(SecretFileError, ConfigError)


async def test_the_watch_reloads_when_a_file_changes_and_only_then(tmp_path: Path) -> None:
    reloader, config, _, registry = make(tmp_path, interval_s=0.05)
    reloader.start()
    try:
        write_config(config, "watched")
        deadline = time.monotonic() + 5
        while sample(registry, "credential_reloads_total", result="ok") != 1:
            assert time.monotonic() < deadline, "the watch did not reload a changed file"
            await asyncio.sleep(0.05)
        assert reloader.tokens.authenticate(bearer("watched")).name == "watched"
        await asyncio.sleep(0.3)  # nothing changed since: no further reload
        assert sample(registry, "credential_reloads_total", result="ok") == 1
    finally:
        await reloader.stop()


async def test_sighup_reloads_at_once(tmp_path: Path) -> None:
    reloader, _, secret, registry = make(tmp_path, interval_s=600)  # the watch would not see it in time
    (tmp_path / "other").mkdir()
    other, *_ = make(tmp_path / "other", interval_s=600)
    other.start()
    reloader.start()
    await other.stop()  # another service on this loop stopping leaves this one's SIGHUP handled
    try:
        secret.path.write_text("replica-3")
        os.kill(os.getpid(), signal.SIGHUP)
        deadline = time.monotonic() + 5
        while secret.value != "replica-3":
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            await asyncio.sleep(0.02)
        assert sample(registry, "credential_reloads_total", result="ok") == 1
    finally:
        await reloader.stop()


def test_token_store_replace_is_all_at_once() -> None:
    store = TokenStore([TokenEntry("a", "edge", hash_token("a"))])
    store.replace([TokenEntry("b", "edge", hash_token("b"))])
    assert len(store) == 1 and store.authenticate(bearer("b")).name == "b"
    with pytest.raises(Unauthenticated):
        store.authenticate(bearer("a"))
