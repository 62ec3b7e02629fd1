# Everything runs from the repository's own virtualenv (.venv), which
# scripts/setup-host.sh creates; it also installs system packages and starts
# the RabbitMQ broker when needed (run as root on a fresh Debian/Ubuntu).

PYTHON := .venv/bin/python
PYTEST_FLAGS ?= -q -p no:cacheprovider

.PHONY: all setup test test-cluster test-packaging deb dist demo bench clean

all: test

setup:
	scripts/setup-host.sh

# tests/packaging (marked `packaging`) builds and installs the .deb and the wheel: minutes
# of its own, so it is `make test-packaging`, which .ci/run runs after `make test`
# Three test processes (pytest-xdist; most tests wait on servers and the broker, not on
# the CPUs), then, alone, the tests marked `serial` (they stop the shared broker).
test: setup
	$(PYTHON) -m pytest $(PYTEST_FLAGS) --ignore=tests/packaging --ignore=tests/cluster \
		-n 3 --dist worksteal -m 'not serial' tests
	$(PYTHON) -m pytest $(PYTEST_FLAGS) -m serial --ignore=tests/packaging --ignore=tests/cluster tests

# tests/cluster (marked `cluster`): a real three-node RabbitMQ cluster on loopback (about
# 30 s to start, then kill -9 of nodes mid-flow; issue 24), which .ci/run also runs
test-cluster: setup
	$(PYTHON) -m pytest $(PYTEST_FLAGS) -rs tests/cluster

# the .deb installed in a fresh Debian 12 chroot (root, debootstrap: skipped with the reason
# otherwise; its base is cached in /var/cache/sarra-packaging) and the wheel in a fresh venv,
# each running a post/subscribe round trip from the installed commands
test-packaging: setup
	$(PYTHON) -m pytest $(PYTEST_FLAGS) -rs tests/packaging

# dist/sarra_<version>_all.deb (dpkg-buildpackage -us -uc -b on a copy of the tree, lintian
# without errors); build packages: debhelper dh-python python3-all python3-setuptools lintian
deb:
	scripts/build-deb.sh dist

# dist/sarra-<version>.tar.gz and dist/sarra-<version>-py3-none-any.whl
dist: setup
	PYTHON=$(PYTHON) scripts/build-dist.sh dist

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
