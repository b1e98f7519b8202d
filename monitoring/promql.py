"""Every PromQL expression the monitoring ships (rules and dashboards), and the metric names in it.

The extraction is lexical, not a full parser: promtool checks that expressions parse (see
`rules_file_for`), and this module only needs to tell metric names apart from functions, keywords,
label names, label values, durations and grouping lists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

MONITORING_DIR = Path(__file__).resolve().parent
RULES_DIR = MONITORING_DIR / "prometheus" / "rules"
DASHBOARDS_DIR = MONITORING_DIR / "grafana" / "dashboards"

# Grafana's interval variables, replaced by a fixed window so that Prometheus can parse the query, and
# the dashboards' own variables by their "All" values (monitoring/dashboards.py).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "5m",
    "$region": ".*",
    "$job": "croupier-.*",
}

KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "and",
        "or",
        "unless",
        "inf",
        "nan",
        "atan2",
        "start",
        "end",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(\s*\()?")


@dataclass(frozen=True)
class Expression:
    source: str  # where it comes from, for failure messages
    expr: str


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (raw metrics and recorded series)."""
    text = substitute_grafana_variables(expr)
    for pattern in (_STRING, _MATCHERS, _RANGE, _GROUPING):
        text = pattern.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        name, call = m.group(1), m.group(2)
        if call is None and name.lower() not in KEYWORDS:
            names.add(name)
    return names


def substitute_grafana_variables(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    return expr


def rule_groups(rules_dir: Path = RULES_DIR) -> list[tuple[Path, dict]]:
    """(file, group) for every rule group in the shipped rule files, in file order."""
    out = []
    for path in sorted(rules_dir.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.append((path, group))
    return out


_DURATION = re.compile(r"(\d+)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(text: str) -> float:
    """Seconds of a Prometheus duration of one or more parts ("30s", "1m30s", "500ms")."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + unit for n, unit in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_S[unit] for n, unit in parts)


def longest_group_interval_s(rules_dir: Path = RULES_DIR) -> float:
    """The longest evaluation interval a rule group sets for itself (0: none sets one, every group
    follows the global `evaluation_interval`)."""
    return max((duration_s(g["interval"]) for _, g in rule_groups(rules_dir) if "interval" in g), default=0.0)


def rule_expressions(rules_dir: Path = RULES_DIR) -> list[Expression]:
    out = []
    for path, group in rule_groups(rules_dir):
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            out.append(Expression(f"{path.name}:{name}", rule["expr"]))
    return out


def recorded_names(rules_dir: Path = RULES_DIR) -> set[str]:
    return {r["record"] for _, g in rule_groups(rules_dir) for r in g["rules"] if "record" in r}


def dashboard_expressions(dashboards_dir: Path = DASHBOARDS_DIR) -> list[Expression]:
    out = []
    for path in sorted(dashboards_dir.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                out.append(Expression(f"{path.name}:{panel['title']}:{target['refId']}", target["expr"]))
        for annotation in dashboard.get("annotations", {}).get("list", []):
            if "expr" in annotation:
                out.append(Expression(f"{path.name}:annotation:{annotation['name']}", annotation["expr"]))
    return out


def all_expressions() -> list[Expression]:
    return rule_expressions() + dashboard_expressions()


def rules_file_for(expressions: list[Expression]) -> dict:
    """A throwaway recording-rules document holding each expression, for `promtool check rules`."""
    rules = [
        {"record": f"croupier_check:expr_{i}", "expr": substitute_grafana_variables(e.expr)}
        for i, e in enumerate(expressions)
    ]
    return {"groups": [{"name": "expression-check", "rules": rules}]}


def exposition_sample_names(text: str) -> set[str]:
    """Sample names in a Prometheus text exposition (what a live /metrics serves)."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def unexported_names(
    expressions: list[Expression], exported: set[str], recorded: set[str], synthetic: frozenset[str]
) -> dict[str, list[str]]:
    """metric name → the expressions naming it, for names no target exports and no rule records."""
    missing: dict[str, list[str]] = {}
    for e in expressions:
        for name in sorted(metric_names(e.expr) - exported - recorded - synthetic):
            missing.setdefault(name, []).append(e.source)
    return missing


# --- label matchers -----------------------------------------------------------------------------

_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^{}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class LabelMatcher:
    source: str  # the rule or panel it comes from
    metric: str  # the series name it selects (a sample name: `_count`, `_bucket`... included)
    label: str
    op: str  # "=", "!=", "=~" or "!~"
    value: str

    def matches(self, value: str) -> bool:
        """PromQL semantics: regular expressions are anchored at both ends."""
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        found = re.fullmatch(self.value, value) is not None
        return found if self.op == "=~" else not found

    @property
    def selects(self) -> bool:
        """An equality or regex matcher: it names the values a series must have."""
        return self.op in ("=", "=~")


def label_matchers(expressions: list[Expression]) -> list[LabelMatcher]:
    """Every `metric{label op "value", ...}` matcher in the expressions (after Grafana's variables
    are replaced), with where it comes from."""
    out = []
    for e in expressions:
        for selector in _SELECTOR.finditer(substitute_grafana_variables(e.expr)):
            for m in _MATCHER.finditer(selector.group(2)):
                value = m.group(3).encode().decode("unicode_escape")
                out.append(LabelMatcher(e.source, selector.group(1), m.group(1), m.group(2), value))
    return out
