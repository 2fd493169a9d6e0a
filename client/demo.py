"""The README's demo: real predictions from the running TorchServe over REST and gRPC.

python client/demo.py [--models lenet5 resnet18]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from samples import SAMPLES, write_samples  # noqa: E402

from zooserve.client import Client  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["lenet5", "resnet18"])
    args = p.parse_args()
    write_samples()
    client = Client()
    for model in args.models:
        files = (
            sorted(SAMPLES.glob("digit_*.png")) if model == "lenet5" else sorted(SAMPLES.glob("*.jpg"))[:2]
        )
        for f in files:
            data = f.read_bytes()
            rest = client.predict(model, data)
            grpc = client.predict(model, data, grpc=True)
            top = rest["predictions"][0]
            same = "same" if grpc["predictions"] == rest["predictions"] else "DIFFERENT"
            print(f"{model:10s} {f.name:28s} -> {top['label']!r:22s} p={top['probability']:.3f} "
                  f"weights={rest['weights']:12s} (REST; gRPC answer: {same})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
