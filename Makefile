# The two commands of the README: `make run` serves the demo tenants, `make test` runs every
# check. Both create .venv from requirements.txt first (again whenever requirements.txt changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test test-order lint clean

run: $(INSTALLED)
	$(BIN)/python -m dispatcher serve

test: $(INSTALLED) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# `make test-order`: the suite without tests/e2e, once in random order (the seed is printed:
# `--random-order-seed=N` replays it) and once reversed, so a test that passes only after
# another one fails here (docs/testing.md). Not part of `make test`.
test-order: $(INSTALLED)
	$(BIN)/python -m pytest --ignore=tests/e2e --random-order $(PYTEST_ARGS)
	$(BIN)/python -m pytest --ignore=tests/e2e --reverse $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(INSTALLED): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# `make bench`: every benchmark, written into docs/benchmarks.md (about 20 minutes on 2 cores):
# the scale benchmarks of issue 8 (bench/bench_scale.py, also docs/benchmarks.png) and issue
# 15's table, before and after (bench/bench_stalls.py, bench/bench_costs.py, and the
# instruction counts of bench/bench_instructions.py, run last: they do not mind a busy
# machine, the wall-clock ones do). A subset: `make bench BENCHES="instructions costs"`, or
# one target with its options: `make bench-scale BENCH_ARGS="--rounds 5"`. While changing the
# request path: `make bench-instructions BENCH_ARGS=--quick` (under a minute, prints only),
# and `BENCH_ARGS="--annotate path"` for where a side's instructions go.
.PHONY: bench bench-scale bench-stalls bench-costs bench-instructions
BENCHES ?= scale stalls costs instructions
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
bench: $(addprefix bench-,$(BENCHES))

bench-scale: $(INSTALLED)
	command -v wrk >/dev/null || $(SUDO) apt-get install -y wrk \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y wrk; }
	$(BIN)/python bench/bench_scale.py $(BENCH_ARGS)

bench-stalls: $(INSTALLED)
	$(BIN)/python bench/bench_stalls.py $(BENCH_ARGS)

bench-costs: $(INSTALLED)
	$(BIN)/python bench/bench_costs.py $(BENCH_ARGS)

bench-instructions: $(INSTALLED)
	command -v valgrind >/dev/null || $(SUDO) apt-get install -y valgrind \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y valgrind; }
	$(BIN)/python bench/bench_instructions.py $(BENCH_ARGS)
