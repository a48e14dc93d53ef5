# Two commands on a fresh machine: `make run` and `make test`. Both create .venv when missing.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-dev

.PHONY: run test test-slow multihost lint bench clean

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/leyline up

# Everything but the slow suites (a few minutes on 2 cores).
test: $(STAMP)
	$(PYTHON) -m pytest -q -m "not slow and not multihost"

# The slow suites: multi-process stacks, faults and chaos, multi-host, DDP, examples, replays.
test-slow: $(STAMP)
	$(PYTHON) -m pytest -q -m "slow or multihost"

# Services on network-namespace hosts (needs root and iproute2; skipped, saying why, without).
multihost: $(STAMP)
	$(PYTHON) -m pytest -q -m multihost tests/multihost

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy leyline bus services

bench: $(STAMP)
	$(PYTHON) -m bench all

clean:
	rm -rf $(VENV) leyline-data .pytest_cache .hypothesis .ruff_cache .mypy_cache
