"""cosmopedia the way the hub ships it: a folder of smollm-corpus parquet shards (or JSON lines), read
with `datasets`, split by document. Tested on the real 50-document piece of shard 0 in
../shared/data/cosmopedia-v2-sample (PROVENANCE.md), which holds the same rows as parquet and jsonl."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from benchmark.judge import data
from benchmark.spec import SPEC
from tests.conftest import DATA_DIR

SAMPLE = DATA_DIR / "cosmopedia-v2-sample"  # ../shared/data, or $PLASA_DATA_DIR
PARQUET = SAMPLE / "train-00000-of-00104-first50.parquet"
JSONL = SAMPLE / "cosmopedia-v2-first50.jsonl"
DOCS = 50

pytestmark = pytest.mark.skipif(not PARQUET.is_file() or not JSONL.is_file(),
                                reason=f"no cosmopedia-v2 sample in {SAMPLE}")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub: a folder the loader cannot read fails instead of downloading. A private cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path / "cache"))


def folder(root, *files, sub="."):
    """A data folder holding links to `files` (in `sub`, e.g. the hub's cosmopedia-v2/)."""
    target = root / sub
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        os.symlink(f, target / f.name)
    return root


def split_tokens(data_dir) -> dict:
    return {split: data.load_tokens("cosmopedia", split, SPEC.tokenizer, data_dir=str(data_dir),
                                    stream_documents=DOCS) for split in data.SPLITS}


def test_the_hub_parquet_gives_the_same_tokens_as_its_jsonl(offline, tmp_path):
    parquet = split_tokens(folder(tmp_path / "parquet", PARQUET, sub="cosmopedia-v2"))  # the hub's layout
    jsonl = split_tokens(folder(tmp_path / "jsonl", JSONL))
    for split in data.SPLITS:
        assert np.array_equal(parquet[split], jsonl[split]), split
    # 50 documents: document 0 is validation, 1 test, the other 48 train
    assert len(parquet["train"]) > 20 * len(parquet["validation"]) > 0 and len(parquet["test"]) > 0


def test_a_folder_of_shards_is_split_by_document(offline, tmp_path):
    """Pointed straight at the shards (no cosmopedia-v2/ level); each document in one split, in
    the shards' order; only the first stream_documents documents."""
    rows = [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()]
    reader, shards = data.corpora(stream_documents=30)["cosmopedia"].read_local, folder(tmp_path, PARQUET)
    texts = {split: reader(shards, split) for split in data.SPLITS}
    assert texts["validation"] == rows[0]["text"] and texts["test"] == rows[1]["text"]
    assert texts["train"] == "\n\n".join(r["text"] for r in rows[2:30])
    assert rows[30]["text"] not in "".join(texts.values())


def test_parquet_wins_over_jsonl_in_one_folder(tmp_path):
    assert data.document_files(folder(tmp_path, PARQUET, JSONL)) == ("parquet", [tmp_path / PARQUET.name])


def test_rows_without_text_are_a_clear_data_error(offline, tmp_path):
    (tmp_path / "cosmopedia-bad.jsonl").write_text(json.dumps({"body": "no text column"}) + "\n")
    with pytest.raises(data.DataError, match="no text column"):
        data.load_tokens("cosmopedia", "validation", SPEC.tokenizer, data_dir=str(tmp_path), stream_documents=5)
