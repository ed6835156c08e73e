# extsock_py: `make demo` and `make test` install everything they need first.
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST_ARGS ?=

.PHONY: install test unit integration lint format demo bench soak lab-docker clean fresh-check \
	compose-demo container-host chaos

install:
	VENV=$(VENV) bash scripts/install-deps.sh

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# The unit suite on every core (pytest-xdist): fakes only, no shared state between tests.
unit: install
	$(PY) -m pytest -q -n auto -m "not integration" tests

integration: install
	$(PY) -m pytest -q -m integration tests

lint: install
	$(BIN)/ruff check extsock_py tests
	$(BIN)/ruff format --check extsock_py tests
	$(BIN)/mypy --strict extsock_py tests

format: install
	$(BIN)/ruff format extsock_py tests
	$(BIN)/ruff check --fix extsock_py tests

demo: install
	$(PY) -m extsock_py.demo

bench: install
	$(PY) -m extsock_py.bench $(if $(QUICK),--quick) $(if $(SMOKE),--smoke)

soak: install
	$(PY) -m pytest -q -s -m soak tests --soak-cycles=$(or $(CYCLES),1000)

# Chaos (issue 26, CHAOS.md): a seeded schedule of faults of every kind against extsock with two
# connections sharing gateways, invariants checked every 0.5 s; exits 1 on any violation.
# As root (the lab). SEED (default: random, printed), DURATION (s, 600), FAULT_EVERY (s, 10).
chaos: install
	$(PY) -m extsock_py.lab.chaos $(if $(SEED),--seed $(SEED)) --duration $(or $(DURATION),600) \
		--fault-every $(or $(FAULT_EVERY),10)

# The README's two commands in a new container from a pristine Debian bookworm image, on a
# fresh clone of the committed HEAD (root and podman; scripts/container-host.sh sets podman up).
fresh-check:
	bash scripts/fresh-check.sh $(if $(DEMO_ONLY),--demo-only)

# The compose lab for real: build, start, kill segw1, tunnel on segw2, tear down (Docker, or
# podman as root).
compose-demo:
	bash scripts/compose-demo.sh

container-host:
	bash scripts/container-host.sh --compose

lab-docker:
	docker compose -f docker/compose.yaml up --build

clean:
	-$(BIN)/extsock lab down
	rm -rf $(VENV) .bench .pytest_cache .mypy_cache .ruff_cache
