# Two commands matter: `make demo` (the main job) and `make test` (what CI runs).
# Both set up everything they need on a fresh Debian machine: the Python venv,
# Debian's PostgreSQL server, and the local control plane (built from the Go module proxy).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all venv system-deps check lint typecheck test pytest demo demo-down bench crds clean

all: test

$(STAMP): pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# PostgreSQL server binaries (the tests start a throwaway cluster from them, never a system service).
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
		echo ">> installing Debian's postgresql server (for the test database)"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null; \
	fi
	@command -v go >/dev/null 2>&1 || [ -n "$$KUBECONFIG" ] || { \
		echo "!! Go is missing: the local control plane is built with 'go build'."; \
		echo "!! Install Go (>= 1.26), or point KUBECONFIG at an existing cluster."; exit 1; }

lint: venv
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy

check: lint typecheck

pytest: venv system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# What CI runs (.ci/run): static checks, then every test against real PostgreSQL and kube-apiserver.
test: check pytest

demo: venv system-deps
	$(VENV)/bin/agentreg dev demo

demo-down: venv
	$(VENV)/bin/agentreg dev demo --down

bench: venv system-deps
	for b in tests/benchmarks/bench_*.py; do echo ">> $$b"; $(PY) $$b || exit 1; done

# crds/ from the models, then its copies in the chart and the kustomize base.
crds: venv
	$(VENV)/bin/agentreg crds --output crds/
	$(PY) hack/helm/render-manifests.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
