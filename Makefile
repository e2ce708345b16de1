# The two commands of the README: `make run` serves the demo tenants, `make test` runs every
# check. Both create .venv from requirements.txt first (again whenever requirements.txt changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint clean

run: $(INSTALLED)
	$(BIN)/python -m dispatcher serve

test: $(INSTALLED) lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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

# `make bench`: the scale benchmarks of issue 8 (about 8 minutes on 2 cores), written into
# docs/benchmarks.md and docs/benchmarks.png. Installs wrk (Debian) when missing; options go
# in BENCH_ARGS, e.g. `make bench BENCH_ARGS="--rounds 5"` (see bench/bench_scale.py --help).
.PHONY: bench
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
bench: $(INSTALLED)
	command -v wrk >/dev/null || $(SUDO) apt-get install -y wrk \
		|| { $(SUDO) apt-get update && $(SUDO) apt-get install -y wrk; }
	$(BIN)/python bench/bench_scale.py $(BENCH_ARGS)
