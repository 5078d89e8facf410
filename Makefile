# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv with the system Python and install the project into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the real tools the tests run: COMMAND PACKAGE per line, also read by tests/real_tools.py
TOOLS_LIST := tests/tools.txt

.PHONY: demo test test-fast tools contracts venv bench clean screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgefleet demo

# Installs the Debian packages of the tools in $(TOOLS_LIST) that are missing (as root, with apt-get);
# without root or apt-get it fails, naming what is missing: nothing is skipped silently.
tools:
	@missing=$$(grep -v '^[[:space:]]*#' $(TOOLS_LIST) | while read -r cmd pkg; do \
	    [ -n "$$cmd" ] && ! command -v "$$cmd" >/dev/null 2>&1 && echo "$$pkg"; done | sort -u | tr '\n' ' '); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make tools: installing $$missing(the real tools the tests run, listed in $(TOOLS_LIST))"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	    echo "make tools: the tests need the Debian package(s) $$missing(listed in $(TOOLS_LIST)) and this" \
	         "is not root with apt-get: install them (sudo apt-get install $$missing) and run make test again." >&2; \
	    exit 1; \
	fi; \
	still=$$(grep -v '^[[:space:]]*#' $(TOOLS_LIST) | while read -r cmd pkg; do \
	    [ -n "$$cmd" ] && ! command -v "$$cmd" >/dev/null 2>&1 && echo "$$cmd"; done | tr '\n' ' '); \
	if [ -n "$$still" ]; then echo "make tools: still missing after the install: $$still" >&2; exit 1; fi

# The whole suite: unit, property, contract and integration tests (real processes, sockets, LMDB, tools).
# Three workers (pytest-xdist), one test file per worker at a time so module fixtures (a fleet, an outage)
# run once; most integration tests wait on processes and sockets, so three fit two cores. The slowest 20
# tests are listed at the end.
test: $(STAMP) tools
	$(BIN)/python -m pytest -n 3 --dist loadfile --durations=20

# The inner loop: everything but the integration tests (no real processes, fleets or tools), in about a minute.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

# The import contracts alone, with import-linter's full report (tests/test_architecture.py checks the same).
contracts: $(STAMP)
	$(BIN)/lint-imports --no-cache

# every benchmark in its quick mode against benchmarks/floors.toml; exits 1 if a floor is not met (not in CI)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

# the console's screenshots in docs/img (the browser tests take them; the README shows two)
screenshots: $(STAMP) tools
	EDGEFLEET_SCREENSHOTS=docs/img $(BIN)/python -m pytest tests/cloud/console/test_console_browser.py -q

clean:
	rm -rf $(VENV) build *.egg-info
