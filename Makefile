# The whole workflow. `make demo` runs the example end to end; `make test` runs everything.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv build demo test test-python test-rust test-django test-redis-range lint fmt bench \
	reliability wheels test-install clean

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: build
	$(BIN)/python scripts/demo.py

# The native worker: `ardiq` in the venv's bin/ (maturin, bindings = "bin"). Rebuilt only
# when a Rust source, manifest, Lua script or dashboard file (embedded) changed; cargo
# reuses the warm target/.
WORKER_SOURCES := Cargo.toml Cargo.lock crates/ardiq-worker/pyproject.toml \
	$(shell find crates -name '*.rs' -o -name Cargo.toml) $(wildcard python/ardiq/lua/*.lua) \
	$(shell find crates/ardiq-worker/dashboard -type f)

build: venv $(BIN)/ardiq $(BIN)/.ardiq_native

$(BIN)/ardiq: $(WORKER_SOURCES)
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release -q \
		-m crates/ardiq-worker/Cargo.toml
	touch $@

# The extension module `ardiq_native` (the engine behind `await app.run()`), from the same
# crates. Its own target directory: maturin tells pyo3 that it builds an extension module
# (PYO3_BUILD_EXTENSION_MODULE), which changes pyo3's build configuration, so sharing
# target/ would rebuild pyo3 and relink the other artifact at every switch between them.
NATIVE_TARGET_DIR ?= $(abspath target/native)
$(BIN)/.ardiq_native: $(WORKER_SOURCES) crates/ardiq-native/pyproject.toml
	CARGO_TARGET_DIR=$(NATIVE_TARGET_DIR) VIRTUAL_ENV=$(abspath $(VENV)) \
		$(BIN)/maturin develop --release -q -m crates/ardiq-native/Cargo.toml
	touch $@

test: venv build test-rust test-python test-django

# The worker's test binaries link libpython by name, without an rpath (the `ardiq`
# launcher finds the interpreter's own at run time, src/launcher.rs): the loader is
# pointed at the venv's Python's.
test-rust: venv
	LD_LIBRARY_PATH="$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}" \
		cargo test --workspace --quiet

test-python: venv build
	$(BIN)/pytest
	$(BIN)/pytest integration -m "not slow"

# Django's task framework (ardiq.contrib.django). On the venv's Python (3.11) `test-python`
# already runs tests/test_django.py on every worker kind against the django-tasks backport
# (in the dev extra). Django 6 itself needs Python 3.12+: the same tests run again in a venv
# of that Python cached under .tmp/django312 (DJANGO_PY picks the interpreter), on the
# pure-Python worker kind, the only one that can load 3.12 here (the binary embeds the
# venv's Python). About 15 s once the venv exists.
DJANGO_PY ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python) \
	$(shell command -v python3.12 python3.13 2>/dev/null))
DJANGO_VENV := .tmp/django312

test-django: $(DJANGO_VENV)/.installed
	cd tests && ARDIQ_NATIVE=0 ../$(DJANGO_VENV)/bin/python -m pytest -q test_django.py

$(DJANGO_VENV)/.installed: pyproject.toml
	@test -n "$(DJANGO_PY)" || { echo "test-django: no Python 3.12+ found; set DJANGO_PY"; exit 1; }
	$(DJANGO_PY) -m venv $(DJANGO_VENV)
	$(DJANGO_VENV)/bin/pip install -q --upgrade pip
	$(DJANGO_VENV)/bin/pip install -q -e '.[django]' 'pytest>=8' 'pytest-asyncio>=0.23' \
		'pytest-timeout>=2.2'
	touch $@

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
