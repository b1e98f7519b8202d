"""Config loading: TOML files into frozen dataclasses, validated once in `main`, passed down.

A config file holds the service's own table plus `[[tokens]]` entries:

    [[tokens]]
    name = "edge-eu"        # identity recorded in the journal (admin identity, via, client_id)
    role = "edge"
    sha256 = "<hex sha256 of the token>"   # or token_file = "path" holding the clear token

Clear tokens never appear in config; `token_file` is read and hashed at load time.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from shared.auth import ROLES, TokenEntry, hash_token
from shared.configspec import Key, Table, check_table


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


TOKENS = Table("tokens", (
    Key("name", str, None, "Identity of the credential, recorded in the journal (principal, `client_id`, `via`); "
        "for role `peer`, the id of the edge that holds it.", required=True),
    Key("role", str, None, "What the credential may do.", choices=tuple(sorted(ROLES)), required=True),
    Key("sha256", str, None, "Hex sha256 digest of the clear token (what `croupier token` prints)."),
    Key("token_file", str, None, "File holding the clear token, read and hashed at load time (instead of "
        "`sha256`).", path=True),
), "Credentials the service accepts: clear tokens never appear in a config, only their digests.", array=True)


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
                digest = hash_token((base / values["token_file"]).read_text().strip())
            except OSError as e:
                found.append(f"tokens[{i}].token_file: cannot read {values['token_file']}: {e.strerror}")
        else:
            found.append(f"tokens[{i}] needs sha256 or token_file")
        if len(found) == before:
            out.append(TokenEntry(name=values["name"], role=values["role"], sha256=digest))
    if problems is None:
        raise_problems(found)
    return out


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
