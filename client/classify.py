"""Smallest useful application: classify image files with the Python client.

python client/classify.py resnet18 photo1.jpg photo2.png [--grpc]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zooserve.client import Client
from zooserve.errors import ZooError


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--grpc", action="store_true")
    args = p.parse_args()
    client = Client()  # 127.0.0.1:8080 / 7070, token from .zooserve/key_file.json
    for path in args.images:
        try:
            top = client.predict(args.model, path.read_bytes(), grpc=args.grpc)["predictions"][0]
            print(f"{path}: {top['label']} ({top['probability']:.1%})")
        except ZooError as e:  # typed: InvalidImage, ImageTooLarge, ...
            print(f"{path}: {e.type}: {e}")


if __name__ == "__main__":
    main()
