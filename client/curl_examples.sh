#!/usr/bin/env bash
# REST examples against a server started with `zooserve serve` (token from .zooserve/key_file.json).
set -euo pipefail
HOST=${HOST:-http://127.0.0.1:8080}
KEY_FILE=${KEY_FILE:-.zooserve/key_file.json}
TOKEN=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['inference']['key'])" "$KEY_FILE")
IMG=${1:-client/samples/china.jpg}

# raw image body: say it is binary (curl's default form encoding makes TorchServe answer 500)
curl -s -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/octet-stream" \
     --data-binary @"$IMG" "$HOST/predictions/resnet18"; echo
# multipart with the field "data", top-3
curl -s -H "Authorization: Bearer $TOKEN" -H "X-Topk: 3" -F "data=@$IMG" "$HOST/predictions/resnet18"; echo
# text for BERT, as JSON
curl -s -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
     -d '{"text": "the striker scored twice before half time"}' "$HOST/predictions/bert"; echo
# captioning with attention maps
curl -s -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/octet-stream" -H "X-Attention: 1" \
     --data-binary @"$IMG" "$HOST/predictions/show_attend_tell" | head -c 400; echo
