# rollguard: `make demo` and `make test` do all the set-up on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck pytest demo bench bench-image-deps chaos prometheus chromium lock clean

# Reinstalls only when the project metadata or the pinned versions change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

prometheus:
	@scripts/ensure-alertmanager
	@scripts/ensure-prometheus

# The live page's browser test drives Debian's headless chromium.
chromium:
	@scripts/ensure-chromium

lint: $(STAMP)
	$(BIN)/ruff check daemon sim tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy --strict daemon sim

# Two passes: independent tests on three workers (the end-to-end ones mostly wait on their policies'
# timers, so three keep two cores busy), then the `serial` ones alone (lease timing, and the fault
# schedules, which run processes of their own). Exit 5 (nothing selected) is not a failure, so
# PYTEST_ARGS can narrow either pass.
pytest: $(STAMP) prometheus chromium
	$(BIN)/pytest -n 3 --dist loadfile -m "not serial" --durations=15 $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/pytest -m serial --durations=10 $(PYTEST_ARGS) || [ $$? -eq 5 ]

test: lint typecheck pytest

demo: $(STAMP) prometheus
	$(BIN)/rollguard demo $(DEMO_ARGS)

bench: $(STAMP) prometheus
	$(BIN)/python -m bench $(BENCH_ARGS)

# The daemon with only the image's dependencies (no test tools), for memory figures that match the
# image: make bench-image-deps && make bench BENCH_ARGS="--only scale --daemon .venv-image/bin/rollguard"
bench-image-deps: .venv-image/.installed
.venv-image/.installed: pyproject.toml constraints.txt $(shell find daemon -name '*.py')
	@test -x .venv-image/bin/python || $(PYTHON) -m venv .venv-image
	.venv-image/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt .
	rm -rf build
	@touch $@

# Seeded fault schedules against rollguard, checked against its invariants (docs/reliability.md),
# then a SIGKILL after each write of one rollback. `make chaos SEEDS=1 SEED=1234 CHAOS_ARGS=` replays
# one seed; four schedules run side by side.
SEEDS ?= 200
SEED ?= 1
CHAOS_ARGS ?= --kill-points
chaos: $(STAMP) prometheus
	$(BIN)/python -m tests.chaos --first $(SEED) --seeds $(SEEDS) $(CHAOS_ARGS)

# Re-resolve the pinned versions after changing dependencies in pyproject.toml.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
	( echo "# Pinned versions for make, CI and the Dockerfile. Regenerate with: make lock"; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^rollguard' ) > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .venv-image .mypy_cache .ruff_cache .pytest_cache
