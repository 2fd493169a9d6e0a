#!/bin/sh
# Build stage of docker/Dockerfile and docker/Dockerfile.locust, run in the source tree:
#   wheel.sh DIST    DIST/zooserve-*.whl + DIST/_proto (gRPC stubs) [+ DIST/compat, transitional]
# Needs a venv that holds TorchServe (its jar carries the .proto files), grpcio-tools and
# googleapis-common-protos.
set -eu
DIST="$1"
mkdir -p "$DIST"
pip wheel --no-deps . -w "$DIST"      # hatchling, fetched by pip into an isolated build env
pip install --no-deps --no-compile "$DIST"/zooserve-*.whl
SITE="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ ! -e "$SITE/zooserve/_proto/__init__.py" ]; then
    (cd / && python -m zooserve.grpc_stubs)   # the installed package, not the source tree
fi
cp -r "$SITE/zooserve/_proto" "$DIST/_proto"
# TRANSITIONAL (until the wheel ships its handler and config template, issue 14): the package
# still resolves handlers/ and build/ next to itself, as in a checkout.
if grep -qs 'parents\[2\] / "handlers"' "$SITE/zooserve/export/archive.py"; then
    mkdir -p "$DIST/compat/handlers" "$DIST/compat/build"
    cp handlers/zooserve_handler.py "$DIST/compat/handlers/"
    cp build/config.properties "$DIST/compat/build/"
    cp -r "$DIST/compat/." "$SITE/"
    echo "wheel.sh: this zooserve wheel does not stand alone; handler + config template copied beside it" >&2
fi
