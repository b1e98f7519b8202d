# Croupier: `make demo` and `make test` set up .venv themselves on a machine with Python 3.11.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench chaos tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,postgres,harness]'
	touch $(STAMP)

# System tools the tests and benchmarks use, from Debian packages when missing.
tools:
	@command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null)
	@command -v systemd-analyze >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null)
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	@test -x /usr/lib/postgresql/15/bin/postgres || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null)
	@command -v patroni >/dev/null && command -v patronictl >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patroni >/dev/null)
	@command -v etcd >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null)
	@command -v nft >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null)
	@command -v valgrind >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null)

demo: $(STAMP) $(if $(filter postgres,$(BACKEND)),tools)
	$(VENV)/bin/croupier demo $(if $(BACKEND),--backend $(BACKEND))

# Two workers, one test file each at a time (docs/decisions/test-suite-on-two-workers.md); TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(STAMP) tools
	$(PY) -m pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP) tools
	$(PY) bench/ledger_throughput.py
	$(PY) bench/edge_throughput.py
	$(PY) bench/sync_lag.py

# The long fault run (the short one is part of make test). SEED=n reproduces a run.
chaos: $(STAMP)
	$(VENV)/bin/croupier chaos --duration $${DURATION:-600} --seed $${SEED:-$$RANDOM} --clients 32

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
