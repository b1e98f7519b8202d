"""Config keys described once: name, type, default, range and meaning of every key of a config table.

The same `Key` table drives three things: checking a table (wrong type, out of range, not a choice, missing,
unknown — every problem collected, none stops the check), environment-variable overrides for containers
(`CROUPIER_<SECTION>__<KEY>=value`, e.g. `CROUPIER_LEDGER__PORT=8700`), and the generated reference
`docs/CONFIG.md` (`python -m croupier.configdoc`). Checks that relate several keys, or read files, stay with the
service's own config module; they add their problems to the same list.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "CROUPIER_"
ENV_SEPARATOR = "__"

# The type names used in messages and in docs/CONFIG.md.
TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list"}


@dataclass(frozen=True)
class Key:
    """One key of a config table. `default` None with `required` False: absent means "not set"."""

    name: str
    type: type
    default: Any
    meaning: str
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # exclusive lower bound (e.g. seconds that must be > 0)
    choices: tuple[str, ...] = ()
    required: bool = False
    path: bool = False  # a file or directory name, relative to the config file
    items: str = ""  # for lists: what each item is (docs)
    any_case: bool = False  # choices compared in lower case (the value is lowered)

    def type_name(self) -> str:
        name = TYPE_NAMES[self.type]
        if self.type is list and self.items:
            name = f"list of {self.items}"
        return f"path ({name})" if self.path else name

    def range_text(self) -> str:
        if self.choices:
            return "one of " + ", ".join(f"`{c}`" for c in self.choices)
        low = (
            f"> {_num(self.above)}"
            if self.above is not None
            else (f">= {_num(self.minimum)}" if self.minimum is not None else "")
        )
        high = f"<= {_num(self.maximum)}" if self.maximum is not None else ""
        return ", ".join(p for p in (low, high) if p)

    def default_text(self) -> str:
        if self.required:
            return "required"
        if self.default is None or self.default == "":
            return "unset"
        if isinstance(self.default, bool):
            return "`true`" if self.default else "`false`"
        if isinstance(self.default, str):
            return f'`"{self.default}"`'
        if isinstance(self.default, (tuple, list)):
            return "`[]`" if not self.default else "`" + json.dumps(list(self.default)) + "`"
        return f"`{_num(self.default)}`"


def _num(value: float | int | None) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return str(value)


@dataclass(frozen=True)
class Table:
    """A config table: `[name]` (`array` False) or `[[name]]` entries (`array` True)."""

    name: str
    keys: tuple[Key, ...]
    meaning: str
    array: bool = False

    def key(self, name: str) -> Key | None:
        return next((k for k in self.keys if k.name == name), None)


def check_value(key: Key, value: Any, where: str) -> tuple[Any, str | None]:
    """The value converted (an int where a number is expected becomes a float), or a problem."""
    if key.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, key.type) or (key.type in (int, float) and isinstance(value, bool)):
        return None, f"{where} must be {'a' if key.type is not int else 'an'} {TYPE_NAMES[key.type]}"
    if key.choices and isinstance(value, str):
        value = value.lower() if key.any_case else value
        if value not in key.choices:
            return None, f"{where} must be one of {', '.join(key.choices)}"
    if key.type is float and not math.isfinite(value):  # NaN passes every bound: refused by name
        return None, f"{where} must be a finite number"
    if key.type in (int, float):
        if key.above is not None and not value > key.above:
            return None, f"{where} must be > {_num(key.above)} ({key.range_text()})"
        if key.minimum is not None and value < key.minimum:
            return None, f"{where} is out of range ({key.range_text()})"
        if key.maximum is not None and value > key.maximum:
            return None, f"{where} is out of range ({key.range_text()})"
    return value, None


def check_table(
    raw: Mapping[str, Any],
    table: Table,
    problems: list[str],
    *,
    where: str | None = None,
    sources: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every key of `table` with its checked value (the default when absent); a bad value keeps the default so
    later checks still run. Unknown keys are problems. `sources` names where a key's value came from when not
    from the file (an environment variable), for the messages."""
    where = where or table.name
    out: dict[str, Any] = {}
    for key in table.keys:
        label = f"{where}.{key.name}"
        if sources and key.name in sources:
            label += f" (from {sources[key.name]})"
        if key.name not in raw:
            if key.required:
                problems.append(f"{label} is required")
            out[key.name] = key.default
            continue
        value, problem = check_value(key, raw[key.name], label)
        if problem:
            problems.append(problem)
            value = key.default
        out[key.name] = value
    unknown = sorted(set(raw) - {k.name for k in table.keys})
    if unknown:
        problems.append(f"unknown {where} keys: {unknown} (known: {sorted(k.name for k in table.keys)})")
    return out


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}{ENV_SEPARATOR}{key.upper()}"


def parse_env_value(key: Key, text: str, name: str) -> tuple[Any, str | None]:
    """An environment variable's text as the key's type: numbers, `true`/`false`, lists as a JSON array or
    comma-separated strings."""
    try:
        if key.type is str:
            return text, None
        if key.type is int:
            return int(text.replace("_", "")), None
        if key.type is float:
            return float(text), None
        if key.type is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True, None
            if lowered in ("false", "0", "no", "off"):
                return False, None
            return None, f"{name} must be true or false"
        if text.lstrip().startswith("["):
            value = json.loads(text)
            if not isinstance(value, list):
                raise ValueError("not a list")
            return value, None
        return [item.strip() for item in text.split(",") if item.strip()], None
    except ValueError:
        return None, f"{name} must be {'a' if key.type is not int else 'an'} {key.type_name()}"


def apply_env(
    raw: dict[str, Any], table: Table, environ: Mapping[str, str], problems: list[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """`raw` (the TOML table) with the table's `CROUPIER_<TABLE>__<KEY>` variables laid over it, and which
    variable set which key; a variable naming no key is a problem, like an unknown key in the file."""
    prefix = f"{ENV_PREFIX}{table.name.upper()}{ENV_SEPARATOR}"
    out = dict(raw)
    sources: dict[str, str] = {}
    for name in sorted(environ):
        if not name.startswith(prefix):
            continue
        key = table.key(name[len(prefix) :].lower())
        if key is None:
            problems.append(f"environment variable {name} names no {table.name} key")
            continue
        value, problem = parse_env_value(key, environ[name], name)
        if problem:
            problems.append(problem)
        else:
            out[key.name] = value
            sources[key.name] = name
    return out, sources
