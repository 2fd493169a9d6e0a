#!/usr/bin/env bash
# Build zooserve's images (make images):  docker/images.sh [cpu] [prometheus] [locust] [gpu]
# (default: cpu prometheus locust). Needs a running Docker engine (docker/dockerd.sh start).
#
# ZOOSERVE_BASE=auto|registry|debootstrap   where the base images come from (default auto):
#   registry     python:3.11-slim-bookworm and debian:bookworm-slim, pulled from a registry
#   debootstrap  zooserve/debian:bookworm, made from Debian's packages by docker/make-base.sh
#   auto         registry when the pull works, else debootstrap
# ZOOSERVE_TORCH_INDEX_URL   index with CPU-only torch wheels (PyTorch's /whl/cpu), when reachable
# ZOOSERVE_MODELS            models built into the serving image (lenet5 resnet18)
# Layers are cached by the engine: a rebuild after a source change redoes only the wheel, the
# models and the small layers after them. The stages before an image's last one are tagged too
# (zooserve-deps:cpu: torch + TorchServe, the slow part; zooserve-build:cpu: g++, the wheel, the
# models; zooserve-locust-build, zooserve-gpu-build), since an untagged stage is "dangling" to
# `docker image prune`, which would throw the cache away. This script then prunes only what its
# rebuilds replaced (dangling images with zooserve's label).
set -euo pipefail
cd "$(dirname "$0")/.."

PY_IMAGE=python:3.11-slim-bookworm
DEB_IMAGE=debian:bookworm-slim
OFFLINE_IMAGE=zooserve/debian:bookworm
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cpu prometheus locust)

docker info >/dev/null 2>&1 || { echo "no Docker engine answers; start one (as root: docker/dockerd.sh start)" >&2; exit 2; }
# The classic builder unless BuildKit's CLI plugin is there (no buildx: the classic one, quietly).
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"

mode="${ZOOSERVE_BASE:-auto}"
if [ "$mode" = auto ]; then
    if docker image inspect "$PY_IMAGE" >/dev/null 2>&1 || timeout 300 docker pull -q "$PY_IMAGE" >/dev/null 2>&1; then
        mode=registry
    else
        echo "images: no registry answers for $PY_IMAGE: making the base from Debian's packages"
        mode=debootstrap
    fi
fi
case "$mode" in
    registry)
        base="$PY_IMAGE"; debian="$DEB_IMAGE"
        docker image inspect "$DEB_IMAGE" >/dev/null 2>&1 || docker pull -q "$DEB_IMAGE" >/dev/null ;;
    debootstrap)
        docker/make-base.sh "$OFFLINE_IMAGE"
        base="$OFFLINE_IMAGE"; debian="$OFFLINE_IMAGE" ;;
    *) echo "ZOOSERVE_BASE must be auto, registry or debootstrap" >&2; exit 2 ;;
esac

log="${ZOOSERVE_IMAGES_LOG:-/tmp/zooserve-images.log}"
: >"$log"
build() {  # build TAG DOCKERFILE ARGS...
    local tag="$1" file="$2" t0 rc
    shift 2
    t0=$(date +%s)
    echo "images: building $tag ($file, base $base)"
    set +e
    docker build --force-rm -f "$file" -t "$tag" "$@" . >>"$log" 2>&1   # no container left by a failed step
    rc=$?
    set -e
    if [ "$rc" != 0 ]; then
        echo "images: $tag failed; last lines of $log:" >&2
        tail -n 40 "$log" >&2
        exit "$rc"
    fi
    echo "images: $tag built in $(( $(date +%s) - t0 ))s, $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}')"
}
for t in "${targets[@]}"; do
    case "$t" in
        cpu) cpu_args=(--build-arg BASE_IMAGE="$base" --build-arg TORCH_INDEX_URL="${ZOOSERVE_TORCH_INDEX_URL:-}"
                       --build-arg MODELS="${ZOOSERVE_MODELS:-lenet5 resnet18}")
             build zooserve-deps:cpu docker/Dockerfile --target deps "${cpu_args[@]}"
             build zooserve-build:cpu docker/Dockerfile --target build "${cpu_args[@]}"
             build zooserve:cpu docker/Dockerfile "${cpu_args[@]}" ;;
        prometheus) build zooserve-prometheus:latest docker/Dockerfile.prometheus --build-arg DEBIAN_IMAGE="$debian" ;;
        locust) build zooserve-locust-build:latest docker/Dockerfile.locust --target build --build-arg BASE_IMAGE="$base"
                build zooserve-locust:latest docker/Dockerfile.locust --build-arg BASE_IMAGE="$base" ;;
        gpu) build zooserve-gpu-build:latest docker/Dockerfile.gpu --target build --build-arg BASE_IMAGE="$base"
             build zooserve:gpu docker/Dockerfile.gpu --build-arg BASE_IMAGE="$base" ;;
        *) echo "unknown image $t (cpu, prometheus, locust, gpu)" >&2; exit 2 ;;
    esac
done
# what the rebuilds above replaced (dangling, zooserve's label only): never another project's images
docker image prune -f --filter "label=org.opencontainers.image.vendor=zooserve" >/dev/null
