"""A model's state dict as one file: a JSON header and raw tensor bytes. No pickle, no code.

Layout: 8 bytes little-endian header length N, N bytes of JSON ``{name: {"dtype", "shape",
"offset", "nbytes"}}``, then the tensors' bytes. The training worker writes it; the judge reads
and checks it (counts, names, shapes) and hands it to the scoring worker, which loads it strictly.
The reader trusts nothing in the file: every offset, size, shape and dtype is validated.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
          "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 16 << 20


class StateFileError(ValueError):
    pass


def write(path: Path, state: dict) -> None:
    """Writes every tensor of `state` (name -> tensor), contiguous, on the CPU."""
    header, blobs, offset = {}, [], 0
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach().to("cpu").contiguous()
        if t.dtype not in NAMES:
            raise StateFileError(f"{name}: dtype {t.dtype} cannot be saved")
        data = t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "offset": offset,
                        "nbytes": len(data)}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)))
        fh.write(head)
        for blob in blobs:
            fh.write(blob)


def read(path: Path, max_bytes: int) -> dict:
    """name -> CPU tensor; StateFileError for anything malformed or larger than `max_bytes`."""
    raw = Path(path).read_bytes() if Path(path).is_file() else None
    if raw is None:
        raise StateFileError("no state file was written")
    if len(raw) > max_bytes + MAX_HEADER:
        raise StateFileError(f"the state file has {len(raw):,} bytes, over the {max_bytes:,} allowed")
    if len(raw) < 8:
        raise StateFileError("the state file is truncated")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER or 8 + n > len(raw):
        raise StateFileError("the state file's header is malformed")
    try:
        header = json.loads(raw[8:8 + n])
    except ValueError as exc:
        raise StateFileError("the state file's header is not JSON") from exc
    if not isinstance(header, dict):
        raise StateFileError("the state file's header is not an object")
    body = memoryview(raw)[8 + n:]
    out = {}
    for name, entry in header.items():
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = [int(s) for s in entry["shape"]]
            offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"bad entry for {name!r}") from exc
        numel = math.prod(shape)
        if (any(s < 0 for s in shape) or offset < 0 or nbytes != numel * torch.empty((), dtype=dtype).element_size()
                or offset + nbytes > len(body)):
            raise StateFileError(f"entry {name!r} does not fit the file")
        if numel == 0:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(bytearray(body[offset:offset + nbytes]), dtype=torch.uint8)
        out[name] = flat.view(dtype).view(shape)
    return out
