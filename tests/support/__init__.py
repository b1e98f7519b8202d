"""Helpers shared by test modules. Test modules import helpers from here, never from each other
(tests/shared/test_suite_imports.py checks it); fixtures stay in the conftest.py of their directory.

- clock: `FakeClock`, a clock the test moves by hand.
- ledger: the ledger's role credentials, its config, an HTTP client speaking as a role, bet bodies.
- ledger_cli: the `croupier ledger` command in a child process.
- journal_commands: ledger domain commands and a fixed mix of them for journal tests.
- edges: in-process edges on loopback against a (fake or real) ledger, their credentials and config.
- edge_config_file: the documented edge config file, written with its secret files.
- real_ledger_traffic: a funded player on a real ledger and raw posts through an edge.
- crdt_network: an in-memory network of CRDT replicas (lossy delivery, anti-entropy).
- polling: waiting for a condition, bounded in time.
- cluster_client: raw HTTP to a live `harness.cluster.Cluster` as any credential.
- leaks: searching response bodies and written files for a cluster's credentials.
- route_policy: both services' route tables, the access policy docs/API.md states, example requests.
- crash_workload: money traffic that remembers every acknowledged answer, and the check after a crash.
- promtool: the promtool binary.
- ordering: the orders of `--test-order` (tests/conftest.py).
- ledger_process: a real `croupier ledger serve` process (loopback, free port, reaped).
- powered_ledger: such a process on a simulated disk that can lose power (the LD_PRELOAD shim).
- local_postgres: the throwaway PostgreSQL the ledger tests share (fixture `pg_server`), a schema per store.
"""
