# extsock_py: `make demo` and `make test` install everything they need first.
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST_ARGS ?=

.PHONY: install test unit integration lint format demo bench soak lab-docker clean fresh-check \
	compose-demo container-host deb lock man completion chaos

install:
	VENV=$(VENV) bash scripts/install-deps.sh

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# The unit suite on every core (pytest-xdist): fakes only, no shared state between tests.
unit: install
	$(PY) -m pytest -q -n auto -m "not integration" tests

integration: install
	$(PY) -m pytest -q -m integration tests

# requirements.lock: every runtime dependency of pyproject.toml, transitive ones too, pinned
# with the sha256 of each of its files (pip-compile --generate-hashes), for CPython 3.11 on
# Debian bookworm amd64; scripts/install-system.sh installs from it with --require-hashes.
# Keeps the current pins where pyproject.toml still allows them; `make lock UPGRADE=1` moves
# every pin to the newest release. The index is the one pip is configured with; its address
# is never written into the file (--no-emit-index-url).
lock: install
	@$(PY) -c 'import platform, sys; ok = sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64"; sys.exit(0 if ok else "make lock: the lock is for CPython 3.11 on amd64, this is " + platform.python_version() + " on " + platform.machine())'
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --strip-extras \
		--allow-unsafe --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
		$(if $(UPGRADE),--upgrade) --output-file requirements.lock pyproject.toml

lint: install
	$(BIN)/ruff check extsock_py tests tools
	$(BIN)/ruff format --check extsock_py tests tools
	$(BIN)/mypy --strict extsock_py tests tools

format: install
	$(BIN)/ruff format extsock_py tests tools
	$(BIN)/ruff check --fix extsock_py tests tools

# docs/man/extsock.8 (from the click commands) and docs/man/extsock.conf.5 (from the policy
# schema); tests/unit/test_docs_sync.py fails when the committed pages are out of date.
man: install
	$(PY) -m tools man

# contrib/bash-completion/extsock, click's bash completion (checked by the same test).
completion: install
	$(PY) -m tools completion

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

# The Debian package extsock_<version>_amd64.deb in this folder (debian/, dpkg-buildpackage,
# then lintian); `make install` (as root) installs the build dependencies first.
deb: install
	bash scripts/build-deb.sh

lab-docker:
	docker compose -f docker/compose.yaml up --build

clean:
	-$(BIN)/extsock lab down
	rm -rf $(VENV) .bench .pytest_cache .mypy_cache .ruff_cache
