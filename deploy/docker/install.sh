#!/bin/sh
# The Docker image's runtime stage: a virtual environment at PREFIX with the `ardiq`
# package and the `ardiq` worker, installed offline from the wheels build.sh made.
#
#   deploy/docker/install.sh WHEELS PREFIX
#
# tests/test_deploy.py runs it outside Docker too, after build.sh, then runs the example
# worker from PREFIX. $PYTHON as for build.sh.
set -eu
WHEELS=$1
PREFIX=$2
PYTHON=${PYTHON:-python3}

"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    --no-index --find-links "$WHEELS" ardiq ardiq-worker ardiq-native
"$PREFIX/bin/ardiq" --version
