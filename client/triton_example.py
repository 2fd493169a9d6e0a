"""An application that already speaks Triton's protocol, unchanged, against zooserve: NVIDIA's
``tritonclient`` (gRPC or HTTP) on the standard v2 ports (8001 / 8000).

    make v2clients          # tritonclient lives in .venv-v2clients (it needs protobuf 6)
    .venv-v2clients/bin/python client/triton_example.py resnet18 client/samples/china.jpg [more.jpg ...]
    .venv-v2clients/bin/python client/triton_example.py bert "what a great match" --http --topk 2

Images (or texts for BERT) go in one batched call, shape [N] BYTES; each answer is the same JSON
as REST (``predictions`` output) plus the numbers (``probabilities``/``indices``, or ``caption``).
The token is TorchServe's inference key, sent as ``authorization: Bearer ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("inputs", nargs="+", help="image files, or texts for a text model")
    p.add_argument("--http", action="store_true", help="HTTP (port 8000) instead of gRPC (8001)")
    p.add_argument("--url", help="host:port (default 127.0.0.1:8001, or :8000 with --http)")
    p.add_argument("--key-file", type=Path, default=Path(".zooserve/key_file.json"))
    p.add_argument("--topk", type=int, help="classes per answer (a v2 request parameter)")
    args = p.parse_args()
    if args.http:
        import tritonclient.http as triton
    else:
        import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    url = args.url or ("127.0.0.1:8000" if args.http else "127.0.0.1:8001")
    headers = {"authorization": f"Bearer {json.loads(args.key_file.read_text())['inference']['key']}"}
    client = triton.InferenceServerClient(url)
    try:
        meta = client.get_model_metadata(args.model, headers=headers)
        name = meta["inputs"][0]["name"] if isinstance(meta, dict) else meta.inputs[0].name
        data = [Path(i).read_bytes() if Path(i).is_file() else i.encode() for i in args.inputs]
        tensor = triton.InferInput(name, [len(data)], "BYTES")
        tensor.set_data_from_numpy(np.array(data, dtype=np.object_))
        params = {"topk": args.topk} if args.topk else None
        result = client.infer(args.model, [tensor], headers=headers, parameters=params)
    except InferenceServerException as e:  # status: the gRPC code or HTTP status; message: "Type: ..."
        print(f"error {e.status()}: {e.message()}", file=sys.stderr)
        return 1
    for item, answer in zip(args.inputs, result.as_numpy("predictions"), strict=True):
        body = json.loads(answer)
        if "caption" in body:
            print(f"{item}: {body['caption']!r} (score {body['score']:.3f})")
        else:
            top = body["predictions"][0]
            print(f"{item}: {top['label']} ({top['probability']:.1%})  weights={body['weights']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
