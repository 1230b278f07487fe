# The whole workflow. `make demo` runs the example end to end; `make test` runs everything.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv build demo test test-python test-rust test-redis-range lint fmt bench reliability \
	wheels test-install clean

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: build
	$(BIN)/python scripts/demo.py

# The native worker: `ardiq` in the venv's bin/ (maturin, bindings = "bin"). Rebuilt only
# when a Rust source, manifest or Lua script changed; cargo reuses the warm target/.
WORKER_SOURCES := Cargo.toml Cargo.lock crates/ardiq-worker/pyproject.toml \
	$(shell find crates -name '*.rs' -o -name Cargo.toml) $(wildcard python/ardiq/lua/*.lua)

build: venv $(BIN)/ardiq $(BIN)/.ardiq_native

$(BIN)/ardiq: $(WORKER_SOURCES)
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release -q \
		-m crates/ardiq-worker/Cargo.toml
	touch $@

# The extension module `ardiq_native` (the engine behind `await app.run()`), from the same
# crates and the same warm target/ (maturin tells pyo3 it builds an extension module).
$(BIN)/.ardiq_native: $(WORKER_SOURCES) crates/ardiq-native/pyproject.toml
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release -q \
		-m crates/ardiq-native/Cargo.toml
	touch $@

test: venv build test-rust test-python

test-rust:
	cargo test --workspace --quiet

test-python: venv build
	$(BIN)/pytest
	$(BIN)/pytest integration -m "not slow"

# The fan-out tests again under the oldest and the newest redis-py that pyproject.toml
# allows, each in a throwaway venv cached under .tmp/redis-range/ (REFRESH=1 remakes them).
test-redis-range: venv build
	ARDIQ_BIN=$(abspath $(BIN))/ardiq $(BIN)/python scripts/redis_range.py \
		$(if $(REFRESH),--refresh)

lint: venv
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BIN)/ruff check python tests integration scripts
	$(BIN)/mypy python/ardiq

fmt:
	cargo fmt --all
	$(BIN)/ruff format python tests integration scripts

# Builds the native worker first: on a fresh clone its rows would be skipped otherwise.
bench: venv build
	$(BIN)/python integration/bench/run.py

# Every fault scenario at full size against all three worker kinds, then the differential
# test (pure-Python loop against the native engine) over 200 seeds (a 10-minute soak per
# kind; SOAK=<seconds> shortens it); writes integration/RELIABILITY.md.
SOAK ?= 600
reliability: venv build
	$(BIN)/python integration/reliability.py --soak-seconds $(SOAK)

# Every wheel a local `pip install --no-index --find-links dist "ardiq[cli]"` needs, into
# dist/: the package, the worker and the extension once per CPython >= 3.11 found here
# (pyenv's versions, /usr/bin, PATH), the dependencies' wheels beside them. FAST=1: LTO off.
wheels: venv
	$(BIN)/python scripts/wheels.py --out dist $(if $(FAST),--fast)

# That install, into a fresh venv per interpreter found (Debian's 3.11 beside pyenv's),
# each running the example through `ardiq run` and `python -m ardiq` (slow: not in `test`).
test-install: wheels
	$(BIN)/python scripts/install_test.py --dist dist

clean:
	rm -rf $(VENV) target dist .pytest_cache .mypy_cache .ruff_cache
