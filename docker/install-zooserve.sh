#!/bin/sh
# Install zooserve from the wheel made in the image's `build` stage (docker/Dockerfile,
# docker/Dockerfile.locust):  install-zooserve.sh DIST
#   DIST/zooserve-*.whl   the project wheel (pip wheel --no-deps .), installed without dependencies
#   DIST/_proto/          gRPC stubs generated in the build stage (the runtime holds no grpcio-tools)
#   DIST/compat/          TRANSITIONAL, only while the wheel does not yet ship the handler and the
#                         config.properties template (issue 14): copied where the package looks
set -eu
DIST="$1"
pip install --no-deps --no-compile "$DIST"/zooserve-*.whl
SITE="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
if [ -d "$DIST/_proto" ] && [ ! -e "$SITE/zooserve/_proto/__init__.py" ]; then
    cp -r "$DIST/_proto" "$SITE/zooserve/_proto"
fi
if [ -d "$DIST/compat" ]; then
    cp -r "$DIST/compat/." "$SITE/"
fi
python -c "import zooserve; print('zooserve', zooserve.__file__)"
