#!/usr/bin/env bash
# gRPC examples with grpcurl, using TorchServe's .proto files kept in proto/ (see proto/README.md).
# Input map values are base64 bytes.
set -euo pipefail
TARGET=${TARGET:-127.0.0.1:7070}
KEY_FILE=${KEY_FILE:-.zooserve/key_file.json}
TOKEN=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['inference']['key'])" "$KEY_FILE")
IMG=${1:-client/samples/china.jpg}
PROTO_DIR=proto
GOOGLE=$(python3 -c "import grpc_tools,os;print(os.path.join(os.path.dirname(grpc_tools.__file__),'_proto'))")
RPC=$(python3 -c "import google.rpc,os;print(os.path.dirname(os.path.dirname(list(google.rpc.__path__)[0])))")

grpcurl -plaintext -import-path "$PROTO_DIR" -import-path "$GOOGLE" -import-path "$RPC" -proto inference.proto \
  -H "authorization: Bearer $TOKEN" \
  -d "{\"model_name\": \"resnet18\", \"input\": {\"data\": \"$(base64 -w0 "$IMG")\"}}" \
  "$TARGET" org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions
