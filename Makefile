# Everything runs from the repository's own virtualenv (.venv), which
# scripts/setup-host.sh creates; it also installs system packages and starts
# the RabbitMQ broker when needed (run as root on a fresh Debian/Ubuntu).

PYTHON := .venv/bin/python
PYTEST_FLAGS ?= -q -p no:cacheprovider

.PHONY: all setup test test-cluster demo bench clean

all: test

setup:
	scripts/setup-host.sh

test: setup
	$(PYTHON) -m pytest $(PYTEST_FLAGS) --ignore=tests/cluster tests

# tests/cluster (marked `cluster`): a real three-node RabbitMQ cluster on loopback (about
# 30 s to start, then kill -9 of nodes mid-flow; issue 24), which .ci/run also runs
test-cluster: setup
	$(PYTHON) -m pytest $(PYTEST_FLAGS) -rs tests/cluster

demo: setup
	$(PYTHON) scripts/demo.py
	$(PYTHON) scripts/pump_demo.py

bench: setup
	@set -e; for f in bench/*.py; do \
		[ -e "$$f" ] || { echo "no benchmarks in bench/"; break; }; \
		echo "== $$f"; $(PYTHON) "$$f"; \
	done

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
