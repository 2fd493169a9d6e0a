#!/bin/sh
# zooserve container entrypoint (docker/Dockerfile, docker/Dockerfile.gpu).
#
#   entrypoint.sh [serve]     `zooserve serve --foreground`: TorchServe on loopback behind the
#                             gateway, which serves the public ports (REST 8080, management 8081,
#                             gRPC 7070/7071, v2 REST 8000 / gRPC 8001, gateway metrics 8002), plus
#                             TorchServe's metrics 8082 and the handler metrics 8083. Serves
#                             $ZOOSERVE_MODELS from $ZOOSERVE_MODEL_STORE; the CPU image has its
#                             default models built in, a missing archive is built first. Publishes
#                             the inference token alone to $ZOOSERVE_INFERENCE_KEY_FILE (keys.py).
#                             Exits non-zero when TorchServe or the gateway dies.
#   entrypoint.sh kserve      KServe predictor: TorchServe alone with the storage-initializer layout
#                             ($KSERVE_MODEL_ROOT/config/config.properties + .../model-store), the
#                             handler-metrics exporter on :8083, and token renewal at half the
#                             tokens' lifetime (token_expiration_min of that config)
#   entrypoint.sh healthcheck [gateway|torchserve]
#                             exit 0 when every model is ready (docker/ready.py; sends the token):
#                             `gateway` for serve mode (default), `torchserve` for kserve mode
#   entrypoint.sh CMD ...     run CMD (zooserve, python, sh, ...)
#
# Environment (defaults in the Dockerfile):
#   ZOOSERVE_MODELS       models to serve (and build when missing)   (lenet5 resnet18)
#   ZOOSERVE_FORMAT       export format for a build at start: aoti, torchscript or tensorrt.
#                         Empty: aoti where a C++ compiler is present (GPU image), else
#                         torchscript (the CPU image holds no compiler)
#   ZOOSERVE_MODEL_STORE  archives                                    (/home/model-server/model-store)
#   ZOOSERVE_RUN_DIR      run dir: key_file.json, logs, pids          (/home/model-server/run)
#   ZOOSERVE_INFERENCE_KEY_FILE  where the inference-only key file goes; empty: not published
#   ZOOSERVE_REBUILD=1    rebuild every model even when its archive exists
#   ZOOSERVE_SERVE_ARGS   more `zooserve serve` options (e.g. --token-expiry-min 60)
#   KSERVE_MODEL_ROOT     kserve mode: the storage URI's mount point   (/mnt/models)
#   ZOOSERVE_KSERVE_CONFIG, ZOOSERVE_KSERVE_MODEL_STORE   kserve mode: override the two paths above
set -eu

MODEL_STORE="${ZOOSERVE_MODEL_STORE:-/home/model-server/model-store}"
RUN_DIR="${ZOOSERVE_RUN_DIR:-/home/model-server/run}"
MODELS="${ZOOSERVE_MODELS:-lenet5 resnet18}"
FORMAT="${ZOOSERVE_FORMAT:-}"
KSERVE_ROOT="${KSERVE_MODEL_ROOT:-/mnt/models}"
KSERVE_CONFIG="${ZOOSERVE_KSERVE_CONFIG:-$KSERVE_ROOT/config/config.properties}"
KSERVE_STORE="${ZOOSERVE_KSERVE_MODEL_STORE:-$KSERVE_ROOT/model-store}"

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

property() {  # property FILE KEY: the last value of KEY in a config.properties, or nothing
    sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1" | tail -n 1
}

healthcheck() {
    case "${1:-gateway}" in
        gateway)
            set -- gateway --key-file "$RUN_DIR/key_file.json" --models "$MODELS"
            if [ -n "${ZOOSERVE_INFERENCE_KEY_FILE:-}" ]; then
                set -- "$@" --published "$ZOOSERVE_INFERENCE_KEY_FILE"
            fi
            ;;
        torchserve)
            set -- torchserve --key-file "$RUN_DIR/key_file.json" --ts-config "$KSERVE_CONFIG"
            ;;
        *) log "healthcheck gateway|torchserve, not $1"; exit 2 ;;
    esac
    exec python /usr/local/bin/zooserve-ready "$@"
}

case "${1:-serve}" in
    serve)
        [ "$#" -gt 0 ] && shift
        mkdir -p "$RUN_DIR"
        build_missing
        if [ -n "${ZOOSERVE_INFERENCE_KEY_FILE:-}" ]; then
            # a child of `zooserve serve` once the exec below replaces this shell; ends with the container
            python /usr/local/bin/zooserve-keys publish "$RUN_DIR/key_file.json" "$ZOOSERVE_INFERENCE_KEY_FILE" &
        fi
        # shellcheck disable=SC2086  # word lists on purpose
        exec zooserve serve $MODELS --foreground --bind 0.0.0.0 \
            --model-store "$MODEL_STORE" --run-dir "$RUN_DIR" ${ZOOSERVE_SERVE_ARGS:-} "$@"
        ;;
    kserve)
        shift
        mkdir -p "$RUN_DIR" && chmod 0700 "$RUN_DIR"
        export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/zooserve-metrics}"
        rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
        python -m zooserve.serving.exporter --port 8083 --bind 0.0.0.0 --dir "$PROMETHEUS_MULTIPROC_DIR" &
        if [ "$(property "$KSERVE_CONFIG" disable_token_authorization)" != "true" ]; then
            expiry="$(property "$KSERVE_CONFIG" token_expiration_min)"
            management="$(property "$KSERVE_CONFIG" management_address)"
            python /usr/local/bin/zooserve-keys renew "$RUN_DIR/key_file.json" \
                "${management:-http://127.0.0.1:8081}" --every "$(( ${expiry:-60} * 30 ))" &
        fi
        cd "$RUN_DIR"  # TorchServe writes key_file.json and logs/ under the working directory
        exec torchserve --start --foreground --ncs \
            --ts-config "$KSERVE_CONFIG" --model-store "$KSERVE_STORE" "$@"
        ;;
    healthcheck)
        shift
        healthcheck "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
