"""Config loading: TOML files into frozen dataclasses, validated once in `main`, passed down.

A config file holds the service's own table plus `[[tokens]]` entries:

    [[tokens]]
    name = "edge-eu"        # identity recorded in the journal (admin identity, via, client_id)
    role = "edge"
    sha256 = "<hex sha256 of the token>"   # or token_file = "path" holding the clear token

Clear tokens never appear in config; `token_file` is read and hashed at load time. The entries
may also live in a separate file named by the service table's `tokens_file` (a TOML file of
`[[tokens]]` entries only, relative to the config file): both lists are accepted together, and
both are re-read on a credential reload (shared/credentials.py).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from shared.auth import ROLES, TokenEntry, hash_token


class ConfigError(ValueError):
    pass


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None


def token_entries(raw: list[dict[str, Any]], base: Path) -> list[TokenEntry]:
    out = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict):
            raise ConfigError(f"tokens[{i}] must be a table ([[tokens]])")
        name, role = t.get("name"), t.get("role")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"tokens[{i}].name is required")
        if role not in ROLES:
            raise ConfigError(f"tokens[{i}].role must be one of {sorted(ROLES)}")
        if "sha256" in t:
            digest = str(t["sha256"]).lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"tokens[{i}].sha256 is not a hex sha256 digest")
        elif "token_file" in t:
            try:
                clear = (base / str(t["token_file"])).read_text().strip()
            except OSError as e:
                raise ConfigError(f"tokens[{i}].token_file: cannot read {t['token_file']}: {e.strerror}") from None
            if not clear:
                raise ConfigError(f"tokens[{i}].token_file: {t['token_file']} is empty")
            digest = hash_token(clear)
        else:
            raise ConfigError(f"tokens[{i}] needs sha256 or token_file")
        out.append(TokenEntry(name=name, role=role, sha256=digest))
    return out


def tokens_file(table: dict[str, Any], base: Path, section: str) -> Path | None:
    """The `tokens_file` of a service table, resolved against the config file's directory."""
    name = pick(table, "tokens_file", str, "")
    if not name:
        return None
    return Path(name) if Path(name).is_absolute() else (base / name).resolve()


def all_token_entries(raw: dict[str, Any], table: dict[str, Any], base: Path, section: str) -> list[TokenEntry]:
    """The config file's `[[tokens]]` followed by those of its `tokens_file`, if any."""
    inline = raw.get("tokens", [])
    if not isinstance(inline, list):
        raise ConfigError("tokens must be an array of tables ([[tokens]])")
    entries = token_entries(inline, base)
    path = tokens_file(table, base, section)
    if path is not None:
        listed = load_toml(path)
        extra = set(listed) - {"tokens"}
        if extra or not isinstance(listed.get("tokens", []), list):
            raise ConfigError(f"{section}.tokens_file {path} may hold only [[tokens]] entries")
        entries += token_entries(listed.get("tokens", []), path.parent)
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
