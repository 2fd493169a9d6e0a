"""Protocol-neutral tensors and the Open Inference Protocol's raw encodings.

Raw tensor data is flattened row-major, little-endian; a BYTES element is a 4-byte little-endian
length followed by its bytes (``raw_input_contents``, ``raw_output_contents`` and the REST
binary-data extension all use this form).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from math import prod
from typing import Any

from zooserve.errors import InvalidTensor

# datatype -> struct code of one element (BYTES is variable-length and handled apart)
STRUCT_CODES = {
    "BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q",
    "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "FP32": "f", "FP64": "d",
}  # fmt: skip
# datatype -> InferTensorContents field holding it ("typed contents")
CONTENTS_FIELDS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


@dataclass
class Tensor:
    """One tensor: ``data`` is the flattened element list (bytes for BYTES, numbers otherwise)."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferCall:
    """An inference request as both wire forms decode it."""

    model: str
    version: str = ""
    id: str = ""
    inputs: list[Tensor] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)  # requested output names (empty: all)


@dataclass
class InferAnswer:
    model: str
    version: str
    id: str
    outputs: list[Tensor]


def pack_bytes(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def unpack_bytes(raw: bytes, what: str = "BYTES tensor") -> list[bytes]:
    """Length-prefixed elements; a length running past the end is the client's error."""
    out, pos, view = [], 0, memoryview(raw)
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InvalidTensor(f"{what}: truncated element length at byte {pos}")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise InvalidTensor(f"{what}: element of {n} bytes runs past the end of the data")
        out.append(bytes(view[pos : pos + n]))
        pos += n
    return out


def to_raw(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return pack_bytes(tensor.data)
    return struct.pack(f"<{len(tensor.data)}{STRUCT_CODES[tensor.datatype]}", *tensor.data)


def from_raw(datatype: str, raw: bytes, what: str = "tensor") -> list[Any]:
    if datatype == "BYTES":
        return unpack_bytes(raw, what)
    code = STRUCT_CODES.get(datatype)
    if code is None:
        raise InvalidTensor(f"{what}: unsupported datatype {datatype!r}")
    size = struct.calcsize(code)
    if len(raw) % size:
        raise InvalidTensor(f"{what}: {len(raw)} bytes is not a whole number of {datatype} elements")
    return list(struct.unpack(f"<{len(raw) // size}{code}", raw))


def element_count(shape: list[int]) -> int:
    if any(d < 0 for d in shape):
        raise InvalidTensor(f"shape {shape} has a negative dimension")
    return prod(shape)
