"""The README's demo: real predictions from the running TorchServe over REST and gRPC.

python client/demo.py [--models lenet5 resnet18]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zooserve.bench.samples import write_samples
from zooserve.client import Client

SAMPLES = Path(__file__).parent / "samples"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["lenet5", "resnet18"])
    args = p.parse_args()
    write_samples(SAMPLES)
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
            print(
                f"{model:10s} {f.name:28s} -> {top['label']!r:22s} p={top['probability']:.3f} "
                f"weights={rest['weights']:12s} (REST; gRPC answer: {same})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
