"""A model's state dict as one file: a JSON header and raw tensor bytes. No pickle, no code.

Layout: 8 bytes little-endian header length N, N bytes of JSON ``{name: {"dtype", "shape",
"offset", "nbytes"}}``, then the tensors' bytes. A tensor under several names (tied weights) is
written once: its entries share one region. The training worker writes it; the judge reads and
checks it (counts, names, shapes) and hands it to the scoring worker, which loads it strictly.

The reader trusts nothing in the file (a worker's hand-over is hostile): it opens the path
without following a link, takes only a regular file whose size (fstat, before any read) is within
the caller's bound, parses a bounded header, and reads each region once, in pieces, straight into
its tensor; every offset, size, shape and dtype is validated, and regions may repeat but never
partly overlap, so what it allocates never exceeds the file's size.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import struct
from pathlib import Path

import torch

from .protocol import ProtocolError, loads_bounded

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
          "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER = 4 << 20     # bytes of JSON header (the reference's is 5 KB)
MAX_ENTRIES = 16384      # tensors in a state (the reference has 55)
MAX_DIMS = 32            # dimensions of one tensor
CHUNK = 16 << 20         # bytes read at a time


class StateFileError(ValueError):
    pass


def write(path: Path, state: dict) -> None:
    """Writes every tensor of `state` (name -> tensor), contiguous, on the CPU; a tensor held
    under several names is written once. Streams each tensor's bytes (no second copy in memory)
    to a new file at `path`, never through a link there."""
    header, tensors, regions, offset = {}, [], {}, 0
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        if tensor.dtype not in NAMES:
            raise StateFileError(f"{name}: dtype {tensor.dtype} cannot be saved")
        nbytes = tensor.numel() * tensor.element_size()
        key = (str(tensor.device), tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if nbytes and key in regions:  # the same tensor under another name
            start = regions[key]
        else:
            start = regions[key] = offset
            tensors.append(tensor.detach().to("cpu").contiguous())
            offset += nbytes
        header[name] = {"dtype": NAMES[tensor.dtype], "shape": list(tensor.shape), "offset": start,
                        "nbytes": nbytes}
    head = json.dumps(header).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(struct.pack("<Q", len(head)))
        fh.write(head)
        for t in tensors:
            if t.numel():
                fh.write(memoryview(t.view(-1).view(torch.uint8).numpy()))


def _open(path: Path) -> int:
    """A read-only descriptor of the regular file at `path`, opened without following a link and
    without blocking on a pipe."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise StateFileError("no state file was written") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StateFileError("the state file is a symbolic link, which the judge does not follow: "
                                 "write the state file itself") from exc
        raise StateFileError(f"the state file cannot be opened ({exc.strerror})") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StateFileError("the state file is not a regular file (a pipe, device or folder)")
    return fd


def _read_into(fd: int, buffer: memoryview, offset: int) -> None:
    """Fills `buffer` from the file at `offset`, CHUNK bytes at a time."""
    done = 0
    while done < len(buffer):
        got = os.preadv(fd, [buffer[done:done + CHUNK]], offset + done)
        if got <= 0:
            raise StateFileError("the state file is shorter than its header says (changed while it was read?)")
        done += got


def _entries(header: dict, body: int) -> list:
    """[(name, dtype, shape, offset, nbytes)] of a parsed header, each checked against the body's
    size; regions may repeat (tied tensors) but never partly overlap."""
    if not isinstance(header, dict):
        raise StateFileError("the state file's header is not an object")
    if len(header) > MAX_ENTRIES:
        raise StateFileError(f"the state file holds {len(header):,} tensors, over {MAX_ENTRIES:,}")
    out = []
    for name, entry in header.items():
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = [int(s) for s in entry["shape"]]
            offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"bad entry for {name[:100]!r}") from exc
        if (len(shape) > MAX_DIMS or any(s < 0 for s in shape) or offset < 0
                or nbytes != math.prod(shape) * torch.empty((), dtype=dtype).element_size()
                or offset + nbytes > body):
            raise StateFileError(f"entry {name[:100]!r} does not fit the file")
        out.append((name, dtype, shape, offset, nbytes))
    end = 0
    for offset, nbytes in sorted({(e[3], e[4]) for e in out if e[4]}):
        if offset < end:
            raise StateFileError("the state file's tensors overlap")
        end = offset + nbytes
    return out


def read(path: Path, max_bytes: int) -> dict:
    """name -> CPU tensor; StateFileError for anything malformed, for a link or anything but a
    regular file, and for a file over `max_bytes` of tensors (its size is read before any byte)."""
    fd = _open(path)
    try:
        size = os.fstat(fd).st_size
        if size > 8 + MAX_HEADER + max_bytes:
            raise StateFileError(f"the state file has {size:,} bytes, over the {max_bytes:,} allowed")
        if size < 8:
            raise StateFileError("the state file is truncated")
        head = bytearray(8)
        _read_into(fd, memoryview(head), 0)
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise StateFileError("the state file's header is malformed")
        text = bytearray(n)
        _read_into(fd, memoryview(text), 8)
        try:
            header = loads_bounded(bytes(text), 3, "the state file's header")
        except ProtocolError as exc:
            raise StateFileError(str(exc)) from exc
        del text
        body = size - 8 - n
        entries = _entries(header, body)
        if sum(nbytes for _, nbytes in {(e[3], e[4]) for e in entries}) > max_bytes:
            raise StateFileError(f"the state file's tensors hold over the {max_bytes:,} bytes allowed")
        regions, out = {}, {}
        for name, dtype, shape, offset, nbytes in entries:
            if nbytes == 0:
                out[name] = torch.empty(shape, dtype=dtype)
                continue
            if (offset, nbytes) not in regions:
                region = torch.empty(nbytes, dtype=torch.uint8)
                _read_into(fd, memoryview(region.numpy()), 8 + n + offset)
                regions[(offset, nbytes)] = region
            out[name] = regions[(offset, nbytes)].view(dtype).view(shape)
        return out
    finally:
        os.close(fd)
