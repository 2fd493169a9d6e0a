"""The README's demo: real predictions from the running TorchServe over REST and gRPC.

python client/demo.py [MY_DIGIT.png ...] [--models lenet5 resnet18]

lenet5 gets scikit-learn's held-out digits and digits drawn with Pillow (pen strokes, Pillow's own
font); files you name are sent to lenet5 too, and the demo shows the 32x32 frame the model read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zooserve import errors
from zooserve.bench.samples import write_samples
from zooserve.client import DEFAULT_KEY_FILE, Client

SAMPLES = Path(__file__).parent / "samples"

SHADES = " .:-=+*#%@"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", default=["lenet5", "resnet18"])
    p.add_argument("files", nargs="*", type=Path, help="your own digit images, sent to lenet5")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--grpc-port", type=int, default=7070)
    p.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE, help="the server's token file")
    args = p.parse_args()
    write_samples(SAMPLES)
    client = Client(args.host, args.port, args.grpc_port, key_file=args.key_file)
    for model in args.models:
        if model == "lenet5":
            files = sorted(SAMPLES.glob("digit_*.png")) + sorted(SAMPLES.glob("drawn_*.png"))
        else:
            files = sorted(SAMPLES.glob("*.jpg"))[:2]
        for f in files:
            data = f.read_bytes()
            try:
                rest = client.predict(model, data)
            except errors.ModelNotFound:
                print(f"{model}: not served here (zooserve serve {model})")
                break
            grpc = client.predict(model, data, grpc=True)
            top = rest["predictions"][0]
            same = "same" if grpc["predictions"] == rest["predictions"] else "DIFFERENT"
            print(
                f"{model:10s} {f.name:28s} -> {top['label']!r:22s} p={top['probability']:.3f} "
                f"weights={rest['weights']:12s} (REST; gRPC answer: {same})"
            )
    for f in args.files:
        send_yours(client, f)
    return 0


def send_yours(client: Client, path: Path) -> None:
    """Your file to lenet5: its answer (or why it was refused) and the frame the model read."""
    try:
        data = path.read_bytes()
    except OSError as e:
        print(f"cannot read {path}: {e.strerror}")
        return
    try:
        answer = client.predict("lenet5", data, headers={"X-TopK": "3"})
    except errors.ZooError as e:
        print(f"lenet5     {path.name:28s} -> refused ({e.status} {e.type}): {e}")
        return
    guesses = ", ".join(f"{p['label']} ({p['probability']:.1%})" for p in answer["predictions"])
    print(f"lenet5     {path.name:28s} -> {guesses}")
    frame = seen_by_lenet5(data)
    if frame:
        print("  what lenet5 read (its 32x32 input: the ink found, cropped, scaled and centred):")
        print("\n".join("  |" + line + "|" for line in frame))


def seen_by_lenet5(data: bytes) -> list[str]:
    """The server's decode and framing of ``data``, redone here (same code), as text: two pixels
    per character, darkest to brightest ink relative to the frame's own brightest."""
    import torch

    from zooserve.manifest import ServingOptions
    from zooserve.models.digits import CANVAS, frame_digits
    from zooserve.runtime.images import decode_image_bytes, limits_for

    image = decode_image_bytes(data, limits_for(1, ServingOptions(), CANVAS)).image  # as the server does
    frames, status = frame_digits([image])
    if int(status[0]) != 0:
        return []
    rows = torch.nn.functional.avg_pool2d(frames, (2, 1))[0, 0]  # characters are twice as tall as wide
    rows = rows / rows.max().clamp_min(1e-6)
    return ["".join(SHADES[min(9, int(v * 10))] for v in row.tolist()) for row in rows]


if __name__ == "__main__":
    sys.exit(main())
