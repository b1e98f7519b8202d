"""Starting a Croupier service process: its config file, its command, its environment, its life.

Everything that runs `croupier ledger serve` or `croupier edge serve` as a child process (the local
cluster of `harness/cluster.py`, the multi-process tests, the benchmarks) goes through here:

- `ServiceConfig` describes a config file as data (the service's table, then its `[[tokens]]`) and
  writes it with a TOML library (`tomli_w`), so a value holding quotes, backslashes or any unicode
  is written as exactly that value; the services read it back with their own loaders (tomllib).
- `serve_command` is the command line; `launch_environment` the environment: the caller's, without
  the config overrides meant for a deployment (`CROUPIER_LEDGER__*`, `CROUPIER_EDGE__*`), with
  unbuffered output, plus what the caller adds (an LD_PRELOAD shim, say).
- `ServiceProcess` is one run of one process: started in its own session with its output appended
  to a log file, ready once an HTTP path answers 200 (bounded; it fails at once, with the log's
  tail, if the process exits first), stopped with SIGTERM and then SIGKILL after a bound, its exit
  status reported. A stop that needed SIGKILL, or a process that exits with an error status, is
  logged as JSON (`croupier.harness.launcher`); a clean start and stop are not.

Nothing here knows a cluster's topology, and nothing imports `core_ledger` or `edge`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog
import tomli_w

from harness.ports import free_port as free_port  # re-exported: the harness and tests take ports here

READY_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 10.0
READY_POLL_S = 0.1
READY_PROBE_TIMEOUT_S = 1.0
LOG_TAIL_LINES = 30
SERVICE_KINDS = ("ledger", "edge")
CROUPIER = (sys.executable, "-m", "croupier")  # how a service is started unless the caller says otherwise
DEPLOYMENT_OVERRIDES = ("CROUPIER_LEDGER__", "CROUPIER_EDGE__")
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # a TOML key that needs no quoting

log = structlog.get_logger("croupier.harness.launcher")


# --- environment ----------------------------------------------------------------------------------


def service_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without config overrides (`CROUPIER_LEDGER__*`, `CROUPIER_EDGE__*`) meant for a real
    deployment: the harness writes each service's whole config itself, and an override left in a
    shell must not move its ports or files."""
    return {k: v for k, v in environ.items() if not k.startswith(DEPLOYMENT_OVERRIDES)}


def launch_environment(
    extra: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What a service starts with: `environ` (default: this process's) less deployment overrides,
    unbuffered output (its log is read while it runs), then `extra`."""
    base = service_environment(os.environ if environ is None else environ)
    return {**base, "PYTHONUNBUFFERED": "1", **(extra or {})}


# --- config files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRow:
    """One `[[tokens]]` entry: a credential's name, its role and the sha256 of its token."""

    name: str
    role: str
    sha256: str


def _toml_value(value: Any) -> Any:
    """A value as tomli_w writes it: paths as text, tuples as arrays, unset (None) keys left out."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_toml_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _toml_value(v) for k, v in value.items() if v is not None}
    return value


def _token(row: TokenRow) -> dict[str, str]:
    return {"name": row.name, "role": row.role, "sha256": row.sha256}


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


@dataclass(frozen=True)
class ServiceConfig:
    """A service's config file as data: `settings` is its `[ledger]` or `[edge]` table (keys as in
    docs/CONFIG.md; a list of tables such as the edge's `peers` becomes `[[edge.peers]]`; None leaves a
    key out), `tokens` its `[[tokens]]`, written last so that a test may append more."""

    kind: str  # "ledger" | "edge"
    settings: Mapping[str, Any]
    tokens: Sequence[TokenRow] = ()

    def __post_init__(self) -> None:
        if self.kind not in SERVICE_KINDS:
            raise ValueError(f"unknown service kind {self.kind!r}")

    def document(self) -> dict[str, Any]:
        """The file's content as the services' loaders read it back."""
        doc: dict[str, Any] = {self.kind: _toml_value(self.settings)}
        if self.tokens:
            doc["tokens"] = [_token(t) for t in self.tokens]
        return doc

    def render(self) -> str:
        """The TOML text. A list of tables (the edge's `peers`, the `tokens`) is written as `[[...]]`
        sections whatever its length (tomli_w alone inlines short ones, and a test appends
        `[[tokens]]` to a written file), each value encoded by tomli_w."""
        table = _toml_value(self.settings)
        lists = {k: v for k, v in table.items() if _is_table_list(v)}
        plain = {k: v for k, v in table.items() if k not in lists}
        chunks = [tomli_w.dumps({self.kind: plain})]
        for key, rows in lists.items():
            if not BARE_KEY.fullmatch(key):  # written into a section header as it is
                raise ValueError(f"{self.kind}.{key}: a list of tables needs a bare key")
            chunks += [f"[[{self.kind}.{key}]]\n" + tomli_w.dumps(row) for row in rows]
        chunks += ["[[tokens]]\n" + tomli_w.dumps(_token(t)) for t in self.tokens]
        return "\n".join(chunks)

    def write(self, path: Path) -> Path:
        """Write the file whole (a temporary file renamed over it: a service reloading it on a file
        change never reads half of it)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.render(), encoding="utf-8")
        tmp.replace(path)
        return path


def serve_command(kind: str, config_path: Path, *args: str, program: Sequence[str] = CROUPIER) -> list[str]:
    """`croupier <kind> serve --config <config_path> <args>`, run as `program` (default: this Python's
    `-m croupier`; a test may start the CLI through a wrapper script instead)."""
    if kind not in SERVICE_KINDS:
        raise ValueError(f"unknown service kind {kind!r}")
    return [*program, kind, "serve", "--config", str(config_path), *args]


# --- processes ------------------------------------------------------------------------------------


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def wait_until_ready(
    url: str,
    proc: subprocess.Popen[bytes],
    *,
    timeout_s: float,
    describe: Callable[[], str],
    tls: ssl.SSLContext | None = None,
) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits, and after `timeout_s` at most."""
    deadline = time.monotonic() + timeout_s
    connector = aiohttp.TCPConnector(ssl=tls if tls is not None else True)
    async with aiohttp.ClientSession(connector=connector) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exited ({proc.returncode}) before ready: {describe()}")
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=READY_PROBE_TIMEOUT_S)) as r:
                    if r.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(READY_POLL_S)
    raise TimeoutError(f"not ready after {timeout_s}s: {describe()}")


@dataclass
class ServiceProcess:
    """One run of one child process, its output appended to `log_path`. `start()` once; `stop()`
    or `kill()` as often as wanted (a stopped process stays stopped and keeps its exit status)."""

    name: str
    argv: Sequence[str]
    log_path: Path
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=launch_environment)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        assert self.popen is None, f"{self.name} already started"
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=dict(self.env),
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} not started"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The exit status once it ended (negative: killed by that signal); None while it runs."""
        return None if self.popen is None else self.popen.poll()

    async def wait_ready(
        self, url: str, *, timeout_s: float = READY_TIMEOUT_S, tls: ssl.SSLContext | None = None
    ) -> None:
        """Until `url` (its /readyz, say) answers 200, `timeout_s` at most; RuntimeError if it exits first."""
        assert self.popen is not None, f"{self.name} not started"
        await wait_until_ready(
            url, self.popen, timeout_s=timeout_s, tls=tls, describe=lambda: f"{self.name}:\n{self.log_tail()}"
        )

    def send_signal(self, sig: int) -> None:
        assert self.popen is not None, f"{self.name} not started"
        self.popen.send_signal(sig)

    def kill(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGKILL (a crash, a power cut) and reap it; the exit status."""
        if self.running:
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(timeout_s)
        return self.exit_code

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (after SIGCONT: a paused process must see it), then SIGKILL if it has not exited
        after `timeout_s`; the exit status (None: never started)."""
        if self.popen is None:
            return None
        if self.running:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "service_killed_after_stop_timeout", service=self.name, pid=self.popen.pid, timeout_s=timeout_s
                )
                self.popen.kill()
                self.popen.wait(timeout_s)
            if self.popen.returncode not in (0, -signal.SIGTERM, -signal.SIGKILL):
                log.warning(
                    "service_exited_with_error",
                    service=self.name,
                    pid=self.popen.pid,
                    exit_code=self.popen.returncode,
                    log_file=str(self.log_path),
                )
        return self.exit_code

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log_path, lines)
