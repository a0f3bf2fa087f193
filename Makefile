# Everything bootstraps a virtualenv in .venv on first use: a fresh machine needs only
# Python 3.11 with pip (and make).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install serve test test-surface-pg test-all lint pytest bench bench-peers bench-growth bench-verify bench-streams bench-rss bench-nodes package-check clean

# Two stamps: serving needs keyfob and its runtime dependencies only; the test extra
# (pytest, ruff, mypy, Playwright, provider SDKs) is installed by the targets that test.
# .ci/package-check builds a fresh venv with `make install` and asserts on `pip list`.
$(BIN)/.serve-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/.serve-installed

serve: $(BIN)/.serve-installed
	$(BIN)/keyfob serve

test: lint pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports
	$(BIN)/mypy

# Two workers per core (pytest-xdist): many tests wait on sockets, fsync, PostgreSQL or a
# child process. --dist loadscope keeps a module on one worker, so a module-scoped server
# or race is set up once; the modules go out in the order tests/conftest.py sorts them
# (slow ones first), not xdist's. The 15 slowest tests are printed, so CI's log shows the time.
# Bytecode is written even where the environment says not to (PYTHONDONTWRITEBYTECODE=1):
# every worker and every server or CLI child the tests start would otherwise compile
# keyfob and the rewritten test modules again (~6 s of CPU per worker, ~0.1 s per child).
# `make test` leaves out the surface tests' PostgreSQL copies (tests/conftest.py SURFACES:
# the API, dashboard, CLI, SDK and MCP tests reach storage through vault calls that the
# core, access, proxy, node and crash tests run on both backends); `make test-surface-pg`
# runs only those copies (CI runs it after `make test`), `make test-all` runs everything.
PYTEST_WORKERS ?= 4
PYTEST_MARKS ?= not surface_postgres
pytest: export PYTHONDONTWRITEBYTECODE :=
pytest: $(BIN)/.installed
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=15 -m "$(PYTEST_MARKS)"

test-surface-pg:
	$(MAKE) pytest PYTEST_MARKS=surface_postgres

test-all: lint
	$(MAKE) pytest PYTEST_MARKS=

# The proxy benchmark (docs/benchmarks.md); e.g. make bench BENCH_ARGS=--quick
bench: $(BIN)/.installed
	$(BIN)/python bench/proxy.py $(BENCH_ARGS)
	$(BIN)/python bench/forward.py $(FORWARD_ARGS)

# The light install, the wheel and sdist, a smoke run from the wheel, the container files.
package-check:
	bash .ci/package-check

# Optional, not in CI: Portkey's gateway and LiteLLM's proxy in the same rounds (installs
# them once into $${XDG_CACHE_HOME:-~/.cache}/keyfob-bench-peers; needs node and npm).
bench-peers: $(BIN)/.installed
	$(BIN)/python bench/peers.py $(BENCH_ARGS)

# Proxy latency on an empty vault vs 10k sets, 100k leases, 1M audit records.
bench-growth: $(BIN)/.installed
	$(BIN)/python bench/growth.py $(BENCH_ARGS)

# `keyfob audit verify` over 1M records: records per second.
bench-verify: $(BIN)/.installed
	$(BIN)/python bench/verify.py $(BENCH_ARGS)

# The SSE stall test at 256, 512 and 1,024 streams on one worker, and RSS at 256.
bench-streams: $(BIN)/.installed
	$(BIN)/python bench/streams.py $(BENCH_ARGS)

# Idle RSS of one server after one request of each kind; e.g. BENCH_ARGS="--importtime --cli"
bench-rss: $(BIN)/.installed
	$(BIN)/python bench/rss.py $(BENCH_ARGS)

# Not in CI: 32 clients over 1, 2 and 3 nodes on PostgreSQL (rps, CPU per request) and
# revocation propagation; every table of the database is dropped first, e.g.
# make bench-nodes KEYFOB_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1/keyfob_bench
bench-nodes: $(BIN)/.installed
	$(BIN)/python bench/nodes.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
