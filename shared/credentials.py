"""Credentials reloaded without a restart: the tokens a service accepts and the ones it presents.

Inbound tokens live in the config file's `[[tokens]]` entries and, optionally, in a separate
`tokens_file` (a TOML file of `[[tokens]]` entries only) named in the service's table. Outbound
tokens (an edge's `ledger_token_file` and `peer_token_file`, a standby's replica token file) are
files holding one clear token each, read through `FileSecret` at every use.

`CredentialReloader` re-reads them all on SIGHUP and when the modification stamp of any of the
watched files changes (checked every `interval_s`). A reload is all or nothing: when any part
fails (a file unreadable or empty, an entry invalid), the service keeps every old credential,
logs `credentials_reload_failed` and sets `credential_reload_failing` to 1 until a reload
succeeds. Tokens are never logged: the log line counts entries and names the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.auth import TokenEntry, TokenStore
from shared.config import ConfigError

log = structlog.get_logger("croupier.credentials")

RELOAD_RESULTS = ("ok", "error")
RELOAD_TRIGGERS = ("sighup", "file_changed")


class SecretFileError(ConfigError):
    pass


def read_secret_file(path: Path) -> str:
    """The clear token in `path` (stripped); SecretFileError when unreadable or empty."""
    try:
        secret = path.read_text().strip()
    except OSError as e:
        raise SecretFileError(f"cannot read {path}: {e.strerror}") from None
    if not secret:
        raise SecretFileError(f"{path} is empty")
    return secret


class FileSecret:
    """A clear token read from a file, re-read on `reload()`; `value` is what to present now."""

    def __init__(self, path: Path, value: str | None = None) -> None:
        self.path = path
        self.value = value if value is not None else read_secret_file(path)

    def __repr__(self) -> str:  # never the secret
        return f"FileSecret({str(self.path)!r})"

    def read(self) -> str:
        return read_secret_file(self.path)


class CredentialMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reloads_total = Counter(
            "credential_reloads_total",
            "Reloads of token files (inbound [[tokens]] and outbound token files) by result.",
            ["result"],
            registry=registry,
        )
        self.reload_failing = Gauge(
            "credential_reload_failing",
            "1 while the last credential reload failed (the old credentials stay in use).",
            registry=registry,
        )
        for result in RELOAD_RESULTS:
            self.reloads_total.labels(result)
        self.reload_failing.set(0)


Stamp = tuple[int, int, int] | None  # (inode, size, mtime_ns) of a file, None when it is missing


def stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


# Every reloader started in this process: one SIGHUP handler serves them all (in-process tests run
# several services on one loop; a process in production runs one).
_SIGHUP_LISTENERS: list[CredentialReloader] = []


def _on_sighup() -> None:
    for reloader in list(_SIGHUP_LISTENERS):
        reloader.reload("sighup")


class CredentialReloader:
    """Applies new credentials to a running service: the TokenStore and every FileSecret."""

    def __init__(
        self,
        tokens: TokenStore,
        metrics: CredentialMetrics,
        *,
        load_tokens: Callable[[], Sequence[TokenEntry]] | None,
        secrets: Sequence[FileSecret] = (),
        watched: Sequence[Path] = (),
        interval_s: float = 2.0,
        on_reload: Sequence[Callable[[TokenStore], object]] = (),
    ) -> None:
        self.tokens = tokens
        self.metrics = metrics
        self._load_tokens = load_tokens  # None: the inbound tokens are not from a file
        self.secrets = tuple(secrets)
        self.watched = tuple(dict.fromkeys([*watched, *(s.path for s in self.secrets)]))
        self.interval_s = interval_s
        self.on_reload = list(on_reload)  # called with the new TokenStore after each applied reload
        self._stamps = {p: stamp(p) for p in self.watched}
        self._task: asyncio.Task[None] | None = None

    def reload(self, trigger: str) -> bool:
        """Re-read everything; apply all of it or none. True when applied."""
        self._stamps = {p: stamp(p) for p in self.watched}
        try:
            entries = list(self._load_tokens()) if self._load_tokens is not None else None
            values = [s.read() for s in self.secrets]
        except Exception as e:  # noqa: BLE001 -- whatever is wrong with a file (even a shape the parser trips on): keep the old ones
            self.metrics.reloads_total.labels("error").inc()
            self.metrics.reload_failing.set(1)
            log.error("credentials_reload_failed", trigger=trigger, error=str(e), files=[str(p) for p in self.watched])
            return False
        if entries is not None:
            self.tokens.replace(entries)
        changed = []
        for secret, value in zip(self.secrets, values, strict=True):
            if value != secret.value:
                secret.value = value
                changed.append(str(secret.path))
        self.metrics.reloads_total.labels("ok").inc()
        self.metrics.reload_failing.set(0)
        log.info(
            "credentials_reloaded",
            trigger=trigger,
            accepted_tokens=len(self.tokens),
            outbound_changed=changed,
            files=[str(p) for p in self.watched],
        )
        for hook in self.on_reload:
            try:
                hook(self.tokens)
            except Exception as e:  # the credentials are applied; a failing follow-up is a bug, logged
                log.exception(
                    "credentials_reload_hook_failed", hook=getattr(hook, "__qualname__", repr(hook)), error=repr(e)
                )
        return True

    def changed(self) -> bool:
        return any(stamp(p) != old for p, old in self._stamps.items())

    def check(self) -> bool | None:
        """Reload when a watched file changed since the last reload; None when none did."""
        return self.reload("file_changed") if self.changed() else None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.check()
            except Exception as e:  # a bug here must not end the watch silently
                self.metrics.reloads_total.labels("error").inc()
                self.metrics.reload_failing.set(1)
                log.exception("credentials_watch_failed", error=repr(e))

    def start(self) -> None:
        """The mtime watch, and SIGHUP (when this loop may handle signals: the main thread's)."""
        loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._watch(), name="credentials-watch")
        if not _SIGHUP_LISTENERS:
            try:
                loop.add_signal_handler(signal.SIGHUP, _on_sighup)
            except (NotImplementedError, RuntimeError, ValueError) as e:
                # No signals on this loop (not the main thread's, or a platform without them): the
                # file watch still reloads; only SIGHUP is unavailable, and the log says so.
                log.warning("credentials_sighup_unavailable", error=repr(e))
        _SIGHUP_LISTENERS.append(self)

    async def stop(self) -> None:
        if self in _SIGHUP_LISTENERS:
            _SIGHUP_LISTENERS.remove(self)
            if not _SIGHUP_LISTENERS:
                # Installed only where start() could install it; elsewhere there is nothing to remove.
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
