"""What a worker hands over is hostile: its channel messages are parsed against a schema, bounded in
size and depth, and nothing that holds them (the result, the cache) recurses without bound."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark.protocol import MAX_TOP_K, Message, ProtocolError, nesting_depth
from benchmark.result import clean


def _built(top_k) -> str:
    return json.dumps({"type": "built", "layer_top_k": top_k})


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# ---------------------------------------------------------------- channel messages
@pytest.mark.parametrize("depth", [4, 700, 200_000])
def test_a_deeply_nested_message_is_a_protocol_error_not_a_recursion_error(depth):
    line = '{"type": "built", "layer_top_k": ' + _nested(depth) + "}"
    with pytest.raises(ProtocolError, match="deeper than"):
        Message.from_json(line)


def test_brackets_inside_strings_are_not_nesting():
    text = json.dumps({"type": "failure", "error": "[[[[{{{{" * 1000, "traceback": '"]]]\\"[[['})
    assert nesting_depth(text, 3) == 1
    assert Message.from_json(text).error.startswith("[[[[")


@pytest.mark.parametrize("top_k", [list(range(MAX_TOP_K + 1)), "x" * 300, {"k": 1}, [128.0, 32.0], [True, 1],
                                   [[128]], 1 << 70, 1.5],
                         ids=["too_long", "long_text", "object", "floats", "bools", "nested", "huge_int", "float"])
def test_other_declarations_are_protocol_errors_naming_the_schema(top_k):
    with pytest.raises(ProtocolError, match="layer_top_k must be None, an int, a text") as caught:
        Message.from_json(_built(top_k))
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("line", [
    '{"type": "step", "step": 99999999999999999999999}',
    '{"type": "out", "shape": [1, 2, 3, 4, 5, 6, 7, 8, 9]}',
    json.dumps({"type": "failure", "error_type": "x" * 1000}),
    json.dumps({"type": "x" * 1000}),
    json.dumps({"type": "hello", **{f"field{i}": i for i in range(10_000)}}),
], ids=["int_over_int64", "shape_over_8", "long_error_type", "long_type", "many_unknown_fields"])
def test_fields_outside_their_bounds_are_protocol_errors(line):
    with pytest.raises(ProtocolError) as caught:
        Message.from_json(line)
    assert len(str(caught.value)) < 1000


def test_the_worker_declares_only_what_the_schema_takes():
    """What an honest model declares reaches the judge as it is (right or wrong, the budget's
    layer_top_k verdict explains it); anything else as a short description."""
    from benchmark.worker.serve import declared_top_k

    for honest in [None, 64, [128, 32, 32, 64], list(range(1, MAX_TOP_K + 1))]:
        assert Message.from_json(_built(declared_top_k(honest))).layer_top_k == honest
    deep = []
    for _ in range(5000):
        deep = [deep]
    for value in [None, 3, [128, 32], (128, 32), [128.0, 32.0], torch.tensor([1, 2]), deep, 10 ** 5000, [True],
                  list(range(100)), "abc", {"a": 1}]:
        Message.from_json(Message("built", layer_top_k=declared_top_k(value)).to_json())
    assert declared_top_k((128, 32, 32, 64)) == [128, 32, 32, 64]


def test_cleaning_a_deep_result_leaves_the_depth_out_instead_of_recursing():
    deep = []
    for _ in range(100_000):
        deep = [deep]
    text = json.dumps(clean({"layer_top_k": deep, "val_ppl": float("nan")}))
    assert '"val_ppl": null' in text and "nested deeper than" in text


def test_a_cache_entry_nested_deeper_than_the_parser_goes_is_ignored(tmp_path):
    from benchmark.judge.runner import _cached

    entry = tmp_path / "entry.json"
    entry.write_text('{"a": ' + _nested(200_000) + "}")
    assert _cached(entry) is None


# ---------------------------------------------------------------- stdout and stderr
class _Stream:
    """A worker's stdout pipe, read in pieces."""

    def __init__(self, pieces: list) -> None:
        self.pieces = list(pieces)

    def read1(self, n: int) -> bytes:
        return self.pieces.pop(0)[:n] if self.pieces else b""


def test_worker_output_is_forwarded_up_to_its_limit_then_counted_and_dropped():
    import io

    from benchmark.judge.launch import LOG_TAIL_CHARS, _LogReader

    echo = io.StringIO()
    pieces = [b"step 1\n", "\u00e9t\u00e9 ".encode() * 500, b"x" * 65536, b"the end\n"]
    reader = _LogReader(_Stream(pieces), echo, limit=1000)
    reader.run()
    total = sum(map(len, pieces))
    assert reader.counts() == {"bytes": total, "forwarded_bytes": 1000, "dropped_bytes": total - 1000}
    forwarded, notice = echo.getvalue().split("\n[plasa]")
    assert forwarded.startswith("step 1\n\u00e9t\u00e9") and len(forwarded.encode()) <= 1000 + 3
    assert "counted and dropped" in notice
    assert reader.tail.endswith("x" * 100 + "the end\n") and len(reader.tail) == LOG_TAIL_CHARS


def test_worker_output_is_counted_without_an_echo():
    from benchmark.judge.launch import _LogReader

    reader = _LogReader(_Stream([b"y" * 5000]), None, limit=1000)
    reader.run()
    assert reader.counts() == {"bytes": 5000, "forwarded_bytes": 0, "dropped_bytes": 4000}


def test_a_flood_of_short_channel_lines_waits_in_the_pipe_not_in_the_judge():
    """A worker writing lines faster than the judge takes them (while it scores a batch) had every
    line queued in the judge's memory; now at most MAX_QUEUED wait, and closing releases the reader."""
    import io
    import queue
    import threading
    import time

    from benchmark.judge.launch import MAX_QUEUED, WorkerProcess

    worker = WorkerProcess.__new__(WorkerProcess)  # only its channel reader, no process
    lines = 100_000
    worker._channel = io.BytesIO(b'{"type": "compiling"}\n' * lines)
    worker.messages = queue.Queue(maxsize=MAX_QUEUED)
    worker._closing = False
    reader = threading.Thread(target=worker._read_channel, daemon=True)
    reader.start()
    time.sleep(0.5)
    assert worker.messages.qsize() == MAX_QUEUED and reader.is_alive()
    assert worker._channel.tell() < lines * 22 // 2  # the rest is still unread
    worker._closing = True
    reader.join(timeout=5)
    assert not reader.is_alive()
