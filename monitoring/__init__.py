"""Monitoring as code: Prometheus scrape config and rules, Grafana dashboards, and their checks.

`contract` lists the metric names the services export (docs/DESIGN.md, "Metrics"), `promql` pulls the
metric names out of every rule and dashboard query, `scrape` points Prometheus at a `croupier up`
cluster directory, and `dashboards` generates the Grafana JSON (`python -m monitoring.dashboards`).
"""
