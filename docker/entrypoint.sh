#!/bin/sh
# zooserve container entrypoint (docker/Dockerfile, docker/Dockerfile.gpu).
#
#   entrypoint.sh [serve]     build the default models into $ZOOSERVE_MODEL_STORE when it holds no
#                             archive, then run TorchServe in the foreground (zooserve serve)
#   entrypoint.sh kserve      KServe predictor: TorchServe with the storage-initializer layout
#                             (/mnt/models/config/config.properties + /mnt/models/model-store) and
#                             the handler-metrics exporter on :8083
#   entrypoint.sh healthcheck exit 0 when /ping answers Healthy and the v2 front-end is ready
#                             (sends the inference token)
#   entrypoint.sh CMD ...     run CMD (zooserve, locust, python, sh, ...)
#
# Environment (defaults in the Dockerfile):
#   ZOOSERVE_MODELS       models to build and serve           (lenet5 resnet18)
#   ZOOSERVE_FORMAT       export format for the first build   (empty: the CLI's default)
#   ZOOSERVE_MODEL_STORE  archive volume                      (/home/model-server/model-store)
#   ZOOSERVE_RUN_DIR      run dir: key_file.json, logs, pid   (/home/model-server/run)
#   ZOOSERVE_REBUILD=1    rebuild the models even when archives exist
set -eu

MODEL_STORE="${ZOOSERVE_MODEL_STORE:-/home/model-server/model-store}"
RUN_DIR="${ZOOSERVE_RUN_DIR:-/home/model-server/run}"
MODELS="${ZOOSERVE_MODELS:-lenet5 resnet18}"
FORMAT="${ZOOSERVE_FORMAT:-}"
KSERVE_ROOT="${KSERVE_MODEL_ROOT:-/mnt/models}"

log() { echo "entrypoint: $*" >&2; }

build_if_empty() {
    mkdir -p "$MODEL_STORE"
    if [ "${ZOOSERVE_REBUILD:-0}" != "1" ] && ls "$MODEL_STORE"/*.mar >/dev/null 2>&1; then
        log "model store $MODEL_STORE already holds archives; not rebuilding (ZOOSERVE_REBUILD=1 to force)"
        return
    fi
    log "building $MODELS into $MODEL_STORE${FORMAT:+ (format $FORMAT)}"
    # shellcheck disable=SC2086  # MODELS is a word list on purpose
    zooserve build $MODELS ${FORMAT:+--format "$FORMAT"} --out "$MODEL_STORE"
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
        build_if_empty
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
