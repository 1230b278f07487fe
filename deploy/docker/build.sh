#!/bin/sh
# The Docker image's build stage: wheels of the `ardiq` package (with its dependencies),
# of the `ardiq` worker binary and of the `ardiq_native` extension (the engine behind
# `await app.run()`), from the source tree SRC into WHEELS.
#
#   deploy/docker/build.sh SRC WHEELS
#
# Needs a Rust toolchain and a Python with its headers and shared libpython. The
# Dockerfile runs it in the builder stage; tests/test_deploy.py runs it as it is, outside
# Docker, with the same arguments mapped to temporary paths. $PYTHON picks the
# interpreter (default: python3); the worker embeds that Python's libpython, so the
# runtime stage must run the same Python build.
set -eu
SRC=$1
WHEELS=$2
PYTHON=${PYTHON:-python3}
TOOLS="$WHEELS/.tools"

"$PYTHON" -m venv "$TOOLS"
"$TOOLS/bin/pip" install --quiet --disable-pip-version-check \
    "maturin>=1.5,<2" "setuptools>=68" wheel
# The package and its dependencies (redis, msgpack), so the runtime installs offline.
"$TOOLS/bin/pip" wheel --quiet --disable-pip-version-check --no-build-isolation \
    --wheel-dir "$WHEELS" "$SRC"
# The worker: a wheel whose only content is the `ardiq` executable (maturin bindings=bin);
# the extension: a wheel with the `ardiq_native` module (bindings=pyo3), in a target
# directory of its own as in the Makefile (pyo3 is configured differently for it).
"$TOOLS/bin/maturin" build --release --quiet --interpreter "$PYTHON" \
    --manifest-path "$SRC/crates/ardiq-worker/Cargo.toml" --out "$WHEELS"
CARGO_TARGET_DIR="$SRC/target/native" "$TOOLS/bin/maturin" build --release --quiet \
    --interpreter "$PYTHON" --manifest-path "$SRC/crates/ardiq-native/Cargo.toml" \
    --out "$WHEELS"
rm -rf "$TOOLS"
