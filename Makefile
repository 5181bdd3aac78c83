# Every target bootstraps what it needs: a fresh clone only needs python3.11, npm and make.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
export PYTHONPATH := $(CURDIR):$(CURDIR)/generated
PROTOS := $(sort $(shell find proto -name "*.proto"))

.PHONY: run test gen lint check-gen clean bench

$(VENV)/.installed: pyproject.toml requirements.lock requirements-dev.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3 setuptools==80.9.0
	$(PY) -m pip install --quiet -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(BUF): package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

## Run the whole stack on its embedded default (SecantusDB under ./.discovery).
run: $(VENV)/.installed
	$(PY) -m services.stack

# The dashboard's browser test drives Debian's chromium (a browser download is not possible).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

## Run the whole test suite.
test: $(VENV)/.installed $(CHROMIUM)
	$(PY) -m pytest

$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.lock
	$(PY) -m pip install --quiet -r requirements-dev.lock -r bench/requirements.lock
	touch $@

## Measure latency, throughput, fan-out and the storage limit, every service its own process
## (bounded: at most 10 minutes). Figures: bench/results/latest.{json,md,png}. Options:
## `$(PY) -m bench --help` (one scenario: `$(PY) -m bench latency --quick`).
bench: $(VENV)/.bench-installed
	$(PY) -m bench $(BENCH_ARGS)

## Regenerate generated/ from proto/.
gen: $(VENV)/.installed
	rm -rf generated && mkdir -p generated
	$(PY) -m grpc_tools.protoc -Iproto --python_out=generated --pyi_out=generated \
		--grpc_python_out=generated $(PROTOS)

## Fail when generated/ is not what proto/ gives.
check-gen: gen
	git diff --exit-code --stat -- generated
	test -z "$$(git status --porcelain -- generated)"

# ruff without its cache: which imports are first-party depends on the tree, which the cache
# does not see (a cached run once passed an import order a fresh clone refused).
lint: $(VENV)/.bench-installed $(BUF)
	$(VENV)/bin/ruff check --no-cache discovery_client services tests bench examples
	$(VENV)/bin/ruff format --no-cache --check discovery_client services tests bench examples
	$(VENV)/bin/mypy discovery_client services tests bench
	$(BUF) lint
	$(BUF) format --diff --exit-code

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
