"""Shrink a CPU-only environment that holds PyPI's CUDA build of torch (used by docker/Dockerfile).

PyPI's torch 2.14 wheel for Linux x86_64 is the CUDA build: beside torch itself it pulls ~3.2 GB of
nvidia-* wheels and triton (~0.9 GB). On a machine without a GPU, torch never calls into them, but
its libraries still *link* against some (libtorch_cuda.so needs libcublas, libcudnn, ...), so the
libraries the dynamic loader demands must stay. This keeps exactly the DT_NEEDED closure of every
shared object outside nvidia/ (torch, torchvision, ...) and deletes the rest: cuDNN's engine
libraries, cuSOLVER (only torch's lazily loaded CUDA linear algebra needs it), static archives,
headers, and triton (a GPU kernel compiler; AOTInductor packages compiled for CPU load without
it). Where PyTorch's CPU wheel index is reachable, the Dockerfile installs the real CPU build
instead and this finds nothing to remove.

    python prune_torch.py SITE_PACKAGES      prints what it removed and the bytes freed
"""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path


def needed(path: Path) -> list[str]:
    """DT_NEEDED entries of an ELF64 little-endian shared object ([] for anything else)."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    (e_shoff,) = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    out = []
    for sh in sections:
        if sh[1] != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[sh[6]]  # sh_link: the section holding the names
        str_off = strtab[4]
        for off in range(sh[4], sh[4] + sh[5], 16):
            tag, val = struct.unpack_from("<qQ", data, off)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", str_off + val)
                out.append(data[str_off + val : end].decode())
    return out


# Loaded by torch only on first use of a CUDA feature (dlopen), never on a CPU: not roots.
LAZY = {"libtorch_cuda_linalg.so"}


def is_shared(p: Path) -> bool:
    return p.is_file() and not p.is_symlink() and (p.suffix == ".so" or ".so." in p.name)


def prune(site: Path) -> int:
    nvidia = site / "nvidia"
    freed = 0

    def remove(p: Path) -> None:
        nonlocal freed
        if p.is_dir() and not p.is_symlink():
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
            shutil.rmtree(p)
        else:
            size = p.stat().st_size
            p.unlink()
        freed += size
        print(f"removed {p.relative_to(site)} ({size / 1e6:.0f} MB)")

    triton = site / "triton"
    if triton.is_dir():
        remove(triton)
    if not nvidia.is_dir():
        return freed
    provided = {p.name: p for p in nvidia.rglob("*") if is_shared(p)}
    # roots: every shared object outside nvidia/ (torch/lib, torch/_C, torchvision, numpy, ...)
    todo = [p for p in site.rglob("*") if is_shared(p) and nvidia not in p.parents and p.name not in LAZY]
    keep: set[Path] = set()
    seen: set[Path] = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        for name in needed(p):
            if name in provided and provided[name] not in keep:
                keep.add(provided[name])
                todo.append(provided[name])
    for p in sorted(provided.values()):
        if p not in keep:
            remove(p)
    for pattern in ("**/*.a", "**/include"):
        for p in sorted(nvidia.glob(pattern)):
            if p.exists():
                remove(p)
    print("kept " + ", ".join(sorted(p.name for p in keep)))
    return freed


if __name__ == "__main__":
    freed = prune(Path(sys.argv[1]))
    print(f"prune_torch: freed {freed / 1e9:.2f} GB")
