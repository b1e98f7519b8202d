"""The repository documents its own contract: docs/API.md names every route of both services (read
from their route tables) and every error code of shared/errors.py with its status, docs/DESIGN.md
every metric of monitoring/contract.py, and no file of the repository cites a document outside it,
or the contract documents other than under docs/."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from shared.errors import CLASS_BY_CODE, error_from_code, status_for
from shared.routes import COMMON_PATHS

from core_ledger import admin_http, audit_http, events_http, reports_http
from core_ledger import http as ledger_http
from edge import http as edge_http
from monitoring.contract import ALL_METRICS

ROOT = Path(__file__).resolve().parents[2]
API_DOC = ROOT / "docs/API.md"
DESIGN_DOC = ROOT / "docs/DESIGN.md"
# Written as patterns so that this file does not match itself.
OUTSIDE_CITATION = re.compile(r"\.\./shared/")
BARE_CITATION = re.compile(r"(?<!docs/)\b(?:API|DESIGN)\.md\b")
# A row of an error table: | `code` | status | ...
ERROR_ROW = re.compile(r"^\|\s*`(?P<code>[a-z_]+)`\s*\|\s*(?P<status>\d{3})\s*\|", re.MULTILINE)


def repository_files() -> list[str]:
    """Tracked files, and new ones git does not ignore (so a citation is caught before a commit)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return sorted({name for name in out.decode().split("\0") if name})


def sections(markdown: str) -> dict[str, str]:
    """Level-2 heading -> the text under it, up to the next level-2 heading."""
    out: dict[str, str] = {}
    heading = ""
    for line in markdown.splitlines(keepends=True):
        if line.startswith("## "):
            heading = line[3:].strip()
            out[heading] = ""
        else:
            out[heading] = out.get(heading, "") + line
    return out


def text_under(markdown: str, prefix: str) -> str:
    """Everything under the level-2 headings that start with `prefix`."""
    return "".join(body for heading, body in sections(markdown).items() if heading.startswith(prefix))


def undocumented(routes: list[tuple[str, str]], text: str) -> list[str]:
    return [f"{method} {path}" for method, path in routes if f"`{method} {path}`" not in text]


def service_routes() -> dict[str, list[tuple[str, str]]]:
    """Heading prefix in docs/API.md -> the routes it must document, from the services' own tables."""
    return {
        "Edge": [(r.method, r.path) for r in edge_http.ROUTES],
        "Ledger": [
            (r.method, r.path)
            for r in (
                *ledger_http.ROUTES,
                *admin_http.ROUTES,
                *audit_http.ROUTES,
                *events_http.ROUTES,
                *reports_http.ROUTES,
            )
        ],
        "Every process": [("GET", path) for path, _, _ in COMMON_PATHS],
    }


def citations(name: str, text: str) -> list[str]:
    found = [f"{name}: {m.group()}" for m in OUTSIDE_CITATION.finditer(text)]
    if not name.startswith("docs/"):  # inside docs/ the documents may name each other relatively
        found += [f"{name}: {m.group()} (cite it as docs/{m.group()})" for m in BARE_CITATION.finditer(text)]
    return found


def test_every_route_of_both_services_is_in_the_api_document() -> None:
    doc = API_DOC.read_text()
    missing = {prefix: undocumented(routes, text_under(doc, prefix)) for prefix, routes in service_routes().items()}
    assert all(routes for routes in service_routes().values())
    assert not any(missing.values()), f"routes missing from the sections of docs/API.md: {missing}"


def test_every_error_code_is_in_the_api_document_with_its_status() -> None:
    documented = {m["code"]: int(m["status"]) for m in ERROR_ROW.finditer(API_DOC.read_text())}
    missing = sorted(set(CLASS_BY_CODE) - set(documented))
    assert not missing, f"error codes of shared/errors.py missing from the tables of docs/API.md: {missing}"
    wrong = {
        code: (documented[code], status_for(error_from_code(code, "")))
        for code in CLASS_BY_CODE
        if documented[code] != status_for(error_from_code(code, ""))
    }
    assert not wrong, f"documented status differs from the code's (documented, actual): {wrong}"


def test_every_contract_metric_is_in_the_design_document() -> None:
    metrics = text_under(DESIGN_DOC.read_text(), "Metrics")
    missing = [m.name for m in ALL_METRICS if f"`{m.name}`" not in metrics]
    assert ALL_METRICS and not missing, f"metrics of monitoring/contract.py missing from docs/DESIGN.md: {missing}"


def test_no_file_cites_documents_outside_the_repository_or_outside_docs() -> None:
    found = []
    names = repository_files()
    assert "docs/API.md" in names and "tests/shared/test_docs.py" in names
    for name in names:
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the work tree
        raw = path.read_bytes()
        if b"\0" in raw:
            continue  # binary
        found += citations(name, raw.decode("utf-8", errors="replace"))
    assert not found, "citations of documents outside the repository, or not under docs/:\n" + "\n".join(found)


def test_the_checks_catch_what_they_look_for() -> None:
    doc = "## Edge\n| `GET /v1/a` | x |\n## Ledger (y)\n| `POST /v1/b` | z |\n"
    assert undocumented([("GET", "/v1/a"), ("POST", "/v1/b")], text_under(doc, "Edge")) == ["POST /v1/b"]
    assert citations("core_ledger/x.py", 'see "../' + "shared/API" + '.md"') != []
    assert citations("README.md", "see DESIGN" + ".md") != []
    assert citations("README.md", "see docs/DESIGN" + ".md and docs/API" + ".md") == []
    assert citations("docs/README.md", "[API" + ".md](API" + ".md)") == []


def test_every_decision_record_and_runbook_is_linked_from_the_docs_index() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    index = (docs / "README.md").read_text()
    unlinked = [
        f"{folder}/{f.name}"
        for folder in ("decisions", "runbooks")
        for f in sorted((docs / folder).glob("*.md"))
        if f"({folder}/{f.name})" not in index
    ]
    assert not unlinked, f"not linked from docs/README.md: {unlinked}"
