"""Sample inputs made from what packages ship (no downloads): digits from scikit-learn's held-out
split, scikit-learn's two bundled photos, and a few generated images of other sizes/formats."""

from __future__ import annotations

import io
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"


def digit_pngs(count: int = 10) -> list[tuple[bytes, int]]:
    """(PNG bytes, true label) for held-out digits, white ink on black as LeNet was trained."""
    from torchvision.io import encode_png

    from zooserve.models.lenet import digits_split

    _, _, x, y = digits_split()
    return [(bytes(encode_png(x[i]).numpy()), int(y[i])) for i in range(min(count, len(y)))]


def photo_jpegs() -> dict[str, bytes]:
    """scikit-learn's china.jpg and flower.jpg, plus generated JPEGs of varied sizes."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_image

    out = {}
    for name in ("china.jpg", "flower.jpg"):
        buf = io.BytesIO()
        Image.fromarray(load_sample_image(name)).save(buf, "JPEG", quality=90)
        out[name] = buf.getvalue()
    rng = np.random.default_rng(0)
    for w, h in ((320, 240), (800, 600), (1280, 720), (97, 131)):
        grad = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
        noise = rng.normal(0, 25, (h, w, 3))
        img = np.clip(grad + noise, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=85)
        out[f"generated_{w}x{h}.jpg"] = buf.getvalue()
    return out


def write_samples(folder: Path = SAMPLES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (png, label) in enumerate(digit_pngs(5)):
        (folder / f"digit_{i}_label{label}.png").write_bytes(png)
    for name, data in photo_jpegs().items():
        (folder / name).write_bytes(data)
    return folder


if __name__ == "__main__":
    print(f"samples written to {write_samples()}")
