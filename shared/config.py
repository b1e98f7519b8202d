"""Config loading: TOML files into frozen dataclasses, validated once in `main`, passed down.

A config file holds the service's own table plus `[[tokens]]` entries:

    [[tokens]]
    name = "edge-eu"        # identity recorded in the journal (admin identity, via, client_id)
    role = "edge"
    sha256 = "<hex sha256 of the token>"   # or token_file = "path" holding the clear token

Clear tokens never appear in config; `token_file` is read and hashed at load time. The entries
may also live in a separate file named by the service table's `tokens_file` (a TOML file of
`[[tokens]]` entries only, relative to the config file): both lists are accepted together, and
both are re-read on a credential reload (shared/credentials.py, `reload_token_entries`).
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer

from shared.auth import ROLES, TokenEntry, hash_token
from shared.configspec import Key, Table, apply_env, check_table, check_value


class ConfigError(ValueError):
    """One or more problems of a config; `problems` lists them all (one line each)."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems: tuple[str, ...] = problems


def raise_problems(problems: list[str]) -> None:
    """Raise one ConfigError naming every problem found, if there is any."""
    if problems:
        raise ConfigError(*problems)


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None


TOKENS = Table(
    "tokens",
    (
        Key(
            "name",
            str,
            None,
            "Identity of the credential, recorded in the journal (principal, `client_id`, `via`); "
            "for role `peer`, the id of the edge that holds it.",
            required=True,
        ),
        Key("role", str, None, "What the credential may do.", choices=tuple(sorted(ROLES)), required=True),
        Key("sha256", str, None, "Hex sha256 digest of the clear token (what `croupier token` prints)."),
        Key(
            "token_file",
            str,
            None,
            "File holding the clear token, read and hashed at load time (instead of `sha256`).",
            path=True,
        ),
    ),
    "Credentials the service accepts: clear tokens never appear in a config, only their digests.",
    array=True,
)


def token_entries(raw: Any, base: Path, problems: list[str] | None = None) -> list[TokenEntry]:
    """The `[[tokens]]` entries; with `problems`, every bad entry is added there, else the first one raises."""
    found: list[str] = [] if problems is None else problems
    out = []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        found.append("tokens must be [[tokens]] tables")
        raw = []
    for i, t in enumerate(raw):
        before = len(found)
        values = check_table(t, TOKENS, found, where=f"tokens[{i}]")
        digest = ""
        if "sha256" in t:
            digest = str(t["sha256"]).lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                found.append(f"tokens[{i}].sha256 is not a hex sha256 digest")
        elif isinstance(values["token_file"], str):
            try:
                clear = (base / values["token_file"]).read_text().strip()
            except OSError as e:
                found.append(f"tokens[{i}].token_file: cannot read {values['token_file']}: {e.strerror}")
            else:
                if clear:
                    digest = hash_token(clear)
                else:
                    found.append(f"tokens[{i}].token_file: {values['token_file']} is empty")
        else:
            found.append(f"tokens[{i}] needs sha256 or token_file")
        if len(found) == before:
            out.append(TokenEntry(name=values["name"], role=values["role"], sha256=digest))
    if problems is None:
        raise_problems(found)
    return out


# The keys of a service table that say where its accepted credentials live and how often they are re-read.
CREDENTIAL_KEYS = (
    Key(
        "tokens_file",
        str,
        "",
        "A TOML file of more `[[tokens]]` entries only (no other table or key), accepted "
        "together with the config's own; both are re-read on SIGHUP or when either file changes.",
        path=True,
    ),
    Key(
        "credentials_check_interval_s",
        float,
        2.0,
        "How often the modification stamps of the token files "
        "(`tokens_file`, the config file, outbound token files) are checked for a credential reload.",
        above=0,
        maximum=600.0,
    ),
)


def tokens_file_path(name: str | None, base: Path) -> Path | None:
    """A table's `tokens_file` value resolved against the config file's directory (None when unset)."""
    if not name:
        return None
    return Path(name) if Path(name).is_absolute() else (base / name).resolve()


def all_token_entries(
    inline: Any, tokens_file: Path | None, base: Path, section: str, problems: list[str]
) -> list[TokenEntry]:
    """The config file's `[[tokens]]` followed by those of its `tokens_file`, if any; every bad entry (of
    either file) is added to `problems`."""
    entries = token_entries(inline, base, problems)
    if tokens_file is None:
        return entries
    try:
        listed = load_toml(tokens_file)
    except ConfigError as e:
        problems.append(f"{section}.tokens_file: {e}")
        return entries
    if set(listed) - {"tokens"}:
        problems.append(f"{section}.tokens_file {tokens_file} may hold only [[tokens]] entries")
        return entries
    return entries + token_entries(listed.get("tokens", []), tokens_file.parent, problems)


def reload_token_entries(path: Path, table: Table, environ: Mapping[str, str]) -> list[TokenEntry]:
    """The tokens a credential reload applies: the `[[tokens]]` of the config file at `path` and of the
    `tokens_file` its `table` names (a `CROUPIER_<TABLE>__TOKENS_FILE` variable of `environ` wins, as at
    start-up). A ConfigError names every problem; the caller then keeps the old tokens."""
    problems: list[str] = []
    raw = load_toml(path)
    section = raw.get(table.name, {})
    if not isinstance(section, dict):
        raise ConfigError(f"[{table.name}] must be a table")
    merged, _ = apply_env(section, table, environ, [])  # a bad variable was refused at start-up already
    key = table.key("tokens_file")
    name = None
    if key is not None and key.name in merged:
        name, problem = check_value(key, merged[key.name], f"{table.name}.{key.name}")
        if problem:
            problems.append(problem)
    base = path.resolve().parent
    entries = all_token_entries(raw.get("tokens", []), tokens_file_path(name, base), base, table.name, problems)
    raise_problems(problems)
    return entries


def pick(raw: dict[str, Any], key: str, typ: type, default: Any) -> Any:
    value = raw.get(key, default)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ConfigError(f"{key} must be {typ.__name__}")
    return value


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def pick_log_level(raw: dict[str, Any], section: str) -> str:
    """`log_level`: one of LOG_LEVELS (any case), default info."""
    level = pick(raw, "log_level", str, "info").lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{section}.log_level must be one of {', '.join(LOG_LEVELS)}")
    return level


def pick_log_file(raw: dict[str, Any], base: Path, section: str) -> Path | None:
    """`log_file`: where the JSON log lines go (appended), relative to the config file; absent or
    empty: stderr."""
    name = pick(raw, "log_file", str, "")
    if not name:
        return None
    path = Path(name) if Path(name).is_absolute() else base / name
    if path.is_dir():
        raise ConfigError(f"{section}.log_file {path} is a directory")
    return path


CONFIG_ERROR_EXIT = 2  # a bad config, like a bad command line: not worth a restart until fixed


def exit_on_config_error(path: Path, problems: tuple[str, ...]) -> typer.Exit:
    """Print every problem of a config file on stderr, one per line; the caller raises the returned Exit (2)."""

    sys.stderr.write(
        f"croupier: invalid config {path} ({len(problems)} problem{'s' if len(problems) > 1 else ''}):\n"
        + "".join(f"  - {p}\n" for p in problems)
    )
    return typer.Exit(CONFIG_ERROR_EXIT)
