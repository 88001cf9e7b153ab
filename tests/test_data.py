"""Token data: counts match PROVENANCE.md, the cache is atomic, locked, self-healing and pickle-free,
splits are disjoint and validation windows do not overlap."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmark.judge import data
from benchmark.spec import SPEC
from benchmark.judge.data import eval_windows, train_windows
from tests.conftest import REPO


def tokens(split, **kw):
    return data.load_tokens("wikitext2", split, SPEC.tokenizer, **kw)


@pytest.mark.parametrize("split, count", [("train", 2_581_976), ("validation", 273_868), ("test", 312_144)])
def test_token_counts_match_provenance(split, count):
    assert len(tokens(split)) == count


def test_cache_round_trip_and_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    first = tokens("validation")
    (manifest_path,) = (tmp_path / "tokens").glob("wikitext2-validation-*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["count"] == len(first) and manifest["dtype"] == "uint16"
    assert {"source_sha256", "tokenizer_sha256", "npy_sha256", "format"} <= set(manifest)
    mtime = manifest_path.stat().st_mtime_ns
    assert np.array_equal(tokens("validation"), first)
    assert manifest_path.stat().st_mtime_ns == mtime, "a valid cache entry was rebuilt"


def test_truncated_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    good = tokens("validation")
    (npy,) = (tmp_path / "tokens").glob("*.npy")
    npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    assert np.array_equal(tokens("validation"), good)
    assert np.array_equal(np.load(npy, allow_pickle=False), good)


def test_stale_manifest_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    good = tokens("validation")
    (manifest_path,) = (tmp_path / "tokens").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["count"] = 5
    manifest_path.write_text(json.dumps(manifest))
    assert np.array_equal(tokens("validation"), good)


def test_two_processes_build_the_same_cache(tmp_path):
    code = ("from benchmark.judge import data; import sys; "
            "t = data.load_tokens('wikitext2', 'test', 'HuggingFaceTB/SmolLM-135M'); print(len(t))")
    env = dict(os.environ, PLASA_CACHE_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["312144", "312144"]
    files = sorted((tmp_path / "tokens").glob("*.npy"))
    assert len(files) == 1 and not list((tmp_path / "tokens").glob("*.tmp"))
    assert np.load(files[0], allow_pickle=False).shape == (312_144,)


def test_no_pickle_anywhere():
    for path in list((REPO / "benchmark").rglob("*.py")) + [REPO / "evaluator.py"]:
        text = path.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, path
        assert "torch.load(" not in text, path


def test_train_and_validation_are_disjoint_and_windows_do_not_overlap():
    train, valid = tokens("train"), tokens("validation")
    # the splits are different files; no 64-token run of validation occurs in train
    probe = valid[1000:1064].tobytes()
    assert probe not in train.tobytes()
    inputs, targets = eval_windows(valid, SPEC.seq_len, None)
    n = (len(valid) - 1) // SPEC.seq_len
    assert inputs.shape == targets.shape == (n, SPEC.seq_len)
    flat = inputs.reshape(-1)
    assert np.array_equal(flat, valid[: n * SPEC.seq_len])  # consecutive, non-overlapping
    assert np.array_equal(targets.reshape(-1), valid[1: n * SPEC.seq_len + 1])


def test_train_windows_come_from_the_evaluator_generator():
    train = tokens("train")
    a = train_windows(train, 5, 2, SPEC.seq_len, seed=42)
    assert a.shape == (5, 2, SPEC.seq_len + 1)
    assert np.array_equal(a, train_windows(train, 5, 2, SPEC.seq_len, seed=42))
    np.random.seed(0)  # a candidate consuming global RNG does not change the batches
    assert np.array_equal(a, train_windows(train, 5, 2, SPEC.seq_len, seed=42))
    assert not np.array_equal(a, train_windows(train, 5, 2, SPEC.seq_len, seed=43))


def test_missing_data_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(data.DataError) as err:
        data.load_tokens("wikitext2", "validation", SPEC.tokenizer, data_dir=str(tmp_path))
    message = str(err.value)
    assert "--data-dir" in message and "PLASA_DATA_DIR" in message and "wiki.valid.tokens" in message


def test_unknown_dataset_is_an_error():
    with pytest.raises(data.DataError, match="unknown dataset"):
        data.load_tokens("nope", "validation", SPEC.tokenizer)


def test_document_corpus_splits_by_document(tmp_path):
    """cosmopedia from local JSONL: every document lands in exactly one split."""
    docs = [f"document number {i} " + "word " * (i % 7) for i in range(300)]
    (tmp_path / "cosmopedia-sample.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs) + "\n")
    reader = data.corpora(stream_documents=250)["cosmopedia"].read_local
    texts = {split: reader(tmp_path, split) for split in data.SPLITS}
    for i, doc in enumerate(docs[:250]):
        holders = [s for s, t in texts.items() if doc + "\n" in t + "\n" and f"number {i} " in t]
        assert len(holders) == 1, (i, holders)
    assert "document number 260 " not in "".join(texts.values())  # only the first N documents
    assert texts["validation"] and texts["test"] and len(texts["train"]) > 10 * len(texts["validation"])
