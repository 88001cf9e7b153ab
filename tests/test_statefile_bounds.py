"""A worker's state file is hostile: opened without following a link, a regular file whose size
is checked before any read, a bounded header, and regions read once, in pieces, never more than
the file holds."""

from __future__ import annotations

import json
import os
import resource
import struct

import pytest
import torch

from benchmark import statefile


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _state() -> dict:
    torch.manual_seed(0)
    weight = torch.randn(64, 32)
    return {"embed": weight, "head": weight, "norm": torch.zeros(32), "half": torch.randn(4, 6).bfloat16(),
            "mask": torch.ones(3, dtype=torch.bool), "empty": torch.empty(0, 4), "scalar": torch.tensor(2.0)}


def test_a_state_round_trips_with_a_tied_tensor_written_once(tmp_path):
    state, path = _state(), tmp_path / "state.bin"
    statefile.write(path, state)
    back = statefile.read(path, 1 << 20)
    assert list(back) == list(state)
    assert all(back[k].dtype == state[k].dtype and torch.equal(back[k], state[k]) for k in state)
    assert back["embed"].data_ptr() == back["head"].data_ptr()
    assert path.stat().st_size < 8 + 2048 + 64 * 32 * 4 + 32 * 4 + 100


def test_a_link_at_the_state_files_path_is_not_followed(tmp_path):
    statefile.write(tmp_path / "elsewhere.bin", _state())
    (tmp_path / "state.bin").symlink_to(tmp_path / "elsewhere.bin")
    with pytest.raises(statefile.StateFileError, match="symbolic link"):
        statefile.read(tmp_path / "state.bin", 1 << 20)


def test_a_pipe_at_the_state_files_path_is_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "state.bin")
    with pytest.raises(statefile.StateFileError, match="not a regular file"):
        statefile.read(tmp_path / "state.bin", 1 << 20)


def test_a_sparse_terabyte_state_file_is_refused_by_its_size_before_any_read(tmp_path):
    path = tmp_path / "state.bin"
    statefile.write(path, _state())
    os.truncate(path, 1 << 40)  # no disk blocks: nothing but its size says it is large
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(statefile.StateFileError, match="1,099,511,627,776 bytes, over the 1,048,576 allowed"):
        statefile.read(path, 1 << 20)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB


def _raw(path, header: dict, body: bytes) -> None:
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + body)


def test_entries_cannot_make_the_reader_allocate_more_than_the_file(tmp_path):
    """A thousand entries over one 1 MiB region, each one byte shorter than the last: partly
    overlapping regions would each be read afresh (1 GiB from a 1 MiB file)."""
    path, size = tmp_path / "state.bin", 1 << 20
    _raw(path, {f"t{i}": {"dtype": "uint8", "shape": [size - i], "offset": i, "nbytes": size - i}
                for i in range(1000)}, bytes(size))
    with pytest.raises(statefile.StateFileError, match="overlap"):
        statefile.read(path, 1 << 30)


def test_repeated_regions_are_read_once(tmp_path):
    path, size = tmp_path / "state.bin", 1 << 20
    _raw(path, {f"t{i}": {"dtype": "float32", "shape": [size // 4], "offset": 0, "nbytes": size}
                for i in range(1000)}, bytes(size))
    state = statefile.read(path, 1 << 21)
    assert len({t.data_ptr() for t in state.values()}) == 1


@pytest.mark.parametrize("header, match", [
    ({"a": {"dtype": "float32", "shape": [[[[1]]]], "offset": 0, "nbytes": 4}}, "deeper than"),
    ({f"t{i}": {"dtype": "float32", "shape": [0], "offset": 0, "nbytes": 0} for i in range(20_000)}, "tensors, over"),
    ({"a": {"dtype": "float32", "shape": [1] * 40, "offset": 0, "nbytes": 4}}, "does not fit"),
], ids=["deep", "too_many", "too_many_dims"])
def test_malformed_headers_are_state_file_errors(tmp_path, header, match):
    path = tmp_path / "state.bin"
    _raw(path, header, bytes(4))
    with pytest.raises(statefile.StateFileError, match=match):
        statefile.read(path, 1 << 20)


def test_a_header_deeper_than_the_parser_goes_is_a_state_file_error(tmp_path):
    path = tmp_path / "state.bin"
    head = ('{"a": ' + _nested(100_000) + "}").encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head)
    with pytest.raises(statefile.StateFileError, match="deeper than"):
        statefile.read(path, 1 << 20)


def test_the_writer_does_not_follow_a_link(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    (tmp_path / "state.bin").symlink_to(target)
    with pytest.raises(OSError):
        statefile.write(tmp_path / "state.bin", _state())
    assert target.read_text() == "keep"
