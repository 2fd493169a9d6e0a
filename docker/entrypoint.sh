#!/bin/sh
# zooserve container entrypoint (docker/Dockerfile, docker/Dockerfile.gpu).
#
#   entrypoint.sh [serve]     serve $ZOOSERVE_MODELS from $ZOOSERVE_MODEL_STORE with TorchServe in the
#                             foreground (zooserve serve). The CPU image has its default models built
#                             in; a model whose archive is missing (another ZOOSERVE_MODELS, or an
#                             empty store mounted over it) is built first
#   entrypoint.sh kserve      KServe predictor: TorchServe with the storage-initializer layout
#                             (/mnt/models/config/config.properties + /mnt/models/model-store) and
#                             the handler-metrics exporter on :8083
#   entrypoint.sh healthcheck exit 0 when /ping answers Healthy (sends the inference token)
#   entrypoint.sh CMD ...     run CMD (zooserve, python, sh, ...)
#
# Environment (defaults in the Dockerfile):
#   ZOOSERVE_MODELS       models to serve (and build when missing)   (lenet5 resnet18)
#   ZOOSERVE_FORMAT       export format for a build at start: aoti, torchscript or tensorrt.
#                         Empty: aoti where a C++ compiler is present (build stage, GPU image),
#                         else torchscript (the CPU image holds no compiler)
#   ZOOSERVE_MODEL_STORE  archives                                    (/home/model-server/model-store)
#   ZOOSERVE_RUN_DIR      run dir: key_file.json, logs, pid          (/home/model-server/run)
#   ZOOSERVE_REBUILD=1    rebuild every model even when its archive exists
set -eu

MODEL_STORE="${ZOOSERVE_MODEL_STORE:-/home/model-server/model-store}"
RUN_DIR="${ZOOSERVE_RUN_DIR:-/home/model-server/run}"
MODELS="${ZOOSERVE_MODELS:-lenet5 resnet18}"
FORMAT="${ZOOSERVE_FORMAT:-}"
KSERVE_ROOT="${KSERVE_MODEL_ROOT:-/mnt/models}"

log() { echo "entrypoint: $*" >&2; }

build_missing() {
    mkdir -p "$MODEL_STORE"
    missing=""
    for m in $MODELS; do
        if [ "${ZOOSERVE_REBUILD:-0}" = "1" ] || [ ! -f "$MODEL_STORE/$m.mar" ]; then
            missing="$missing $m"
        fi
    done
    if [ -z "$missing" ]; then
        log "serving archives from $MODEL_STORE: $MODELS"
        return
    fi
    format="$FORMAT"
    if [ -z "$format" ]; then
        if command -v c++ >/dev/null 2>&1; then format=aoti; else format=torchscript; fi
    fi
    log "building$missing into $MODEL_STORE (format $format)"
    # shellcheck disable=SC2086  # a word list on purpose
    zooserve build $missing --format "$format" --out "$MODEL_STORE"
}

healthcheck() {
    # TorchServe's /ping, then the v2 front-end's readiness (ZOOSERVE_V2_READY_URL= skips it)
    python - "$RUN_DIR/key_file.json" "${ZOOSERVE_PING_URL:-http://127.0.0.1:8080/ping}" \
        "${ZOOSERVE_V2_READY_URL-http://127.0.0.1:8000/v2/health/ready}" <<'PY'
import json, sys, urllib.request
key_file, url, v2_url = sys.argv[1], sys.argv[2], sys.argv[3]
headers = {}
try:  # TorchServe 0.12 requires the inference token on /ping too
    headers["Authorization"] = "Bearer " + json.load(open(key_file))["inference"]["key"]
except (OSError, KeyError, ValueError):
    pass  # token auth disabled (KServe config) or not written yet
try:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
        if json.load(r).get("status") != "Healthy":
            sys.exit(1)
    if v2_url:
        with urllib.request.urlopen(urllib.request.Request(v2_url, headers=headers), timeout=5) as r:
            sys.exit(0 if json.load(r).get("ready") is True else 1)
except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
PY
}

case "${1:-serve}" in
    serve)
        [ "$#" -gt 0 ] && shift
        mkdir -p "$RUN_DIR"
        build_missing
        # shellcheck disable=SC2086
        exec zooserve serve $MODELS --foreground --bind 0.0.0.0 \
            --model-store "$MODEL_STORE" --run-dir "$RUN_DIR" "$@"
        ;;
    kserve)
        shift
        export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/zooserve-metrics}"
        rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
        python -m zooserve.serving.exporter --port 8083 --bind 0.0.0.0 --dir "$PROMETHEUS_MULTIPROC_DIR" &
        cd "$RUN_DIR"  # TorchServe writes logs/ under the working directory
        exec torchserve --start --foreground --ncs \
            --ts-config "$KSERVE_ROOT/config/config.properties" \
            --model-store "$KSERVE_ROOT/model-store" "$@"
        ;;
    healthcheck)
        healthcheck
        ;;
    *)
        exec "$@"
        ;;
esac
