"""Clusters on a local PostgreSQL (and on Patroni): real processes, each test in a short temp dir
(`short_dir`, tests/conftest.py: PostgreSQL's unix socket lives there and its path is limited to
107 bytes)."""
