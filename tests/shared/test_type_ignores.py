"""Every `type: ignore` in the repository names its error code and says why, on the same line."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIPPED = {".venv", ".git", "node_modules", "build", "dist"}
IGNORE = re.compile(r"type:\s*ignore\b")
EXPLAINED = re.compile(r"type:\s*ignore\[[a-z0-9_,-]+\]\s*#\s*\S")


def python_files() -> list[Path]:
    return [
        p
        for p in ROOT.rglob("*.py")
        if not any(part in SKIPPED or part.startswith(".") for part in p.relative_to(ROOT).parts)
    ]


def unexplained(source: str) -> list[int]:
    out = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and IGNORE.search(token.string) and not EXPLAINED.search(token.string):
            out.append(token.start[0])
    return out


def test_the_check_tells_an_explained_ignore_from_a_bare_one() -> None:
    assert unexplained("x = f()  # type: ignore[arg-type]  # a stand-in\n") == []
    assert unexplained("x = f()  # type: ignore[arg-type]\n") == [1]
    assert unexplained("x = f()  # type: ignore  # no code\n") == [1]
    assert unexplained('x = "# type: ignore"\n') == []  # in a string, not a comment


def test_every_type_ignore_names_its_code_and_a_reason() -> None:
    bare = [f"{p.relative_to(ROOT)}:{line}" for p in python_files() for line in unexplained(p.read_text())]
    assert bare == [], "add the error code and a reason: # type: ignore[code]  # why"
