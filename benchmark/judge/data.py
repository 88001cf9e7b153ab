"""Corpora, tokenizer and the token cache.

A corpus is resolved by name from :data:`CORPORA`. Each split is read from a local directory
(``--data-dir`` / ``PLASA_DATA_DIR``) or, failing that, from the Hugging Face hub, tokenized once
with the whole split encoded at once, and cached as a ``.npy`` array plus a JSON manifest under
``PLASA_CACHE_DIR`` (default ``~/.cache/plasa-bench``). Cache writes are atomic and serialised by a
file lock; an entry whose manifest or checksum disagrees is rebuilt. No pickle is used anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from ..fsutil import atomic_write, cache_dir, locked
from ..spec import SPEC

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
SPLITS = ("train", "validation", "test")


class DataError(RuntimeError):
    """Data or tokenizer could not be found; the message says how to provide it."""


def _no_data_message(what: str, detail: str) -> str:
    return (
        f"Could not load {what}: {detail}. PLASA-Bench reads data from a local directory first: "
        "pass --data-dir DIR (or set PLASA_DATA_DIR) to a folder holding WikiText-2's "
        "wiki.train.tokens, wiki.valid.tokens and wiki.test.tokens (or the .raw files for "
        "wikitext2-raw), directly or in a wikitext-2-tokenized/ or wikitext-2-raw/ subfolder, and "
        "--tokenizer-dir DIR (or PLASA_TOKENIZER_DIR) to a folder holding the SmolLM-135M "
        "tokenizer.json (directly or in tokenizers/smollm-135m/). Without local files it tries the "
        "Hugging Face hub, which needs network access and `pip install datasets`."
    )


# ----------------------------------------------------------------------------- corpora

@dataclass(frozen=True)
class Corpus:
    name: str
    hub_id: str
    hub_config: str
    # Returns the split's text from a local directory, or None when the files are not there.
    read_local: Callable[[Path, str], Optional[str]]
    # Returns the split's text from the hub (network).
    read_hub: Callable[["Corpus", str, int], str]


def _wikitext_reader(suffix: str, subdir: str) -> Callable[[Path, str], Optional[str]]:
    short = {"train": "train", "validation": "valid", "test": "test"}

    def read(data_dir: Path, split: str) -> Optional[str]:
        name = f"wiki.{short[split]}.{suffix}"
        for folder in (data_dir, data_dir / subdir):
            path = folder / name
            if path.is_file():
                return path.read_text(encoding="utf-8")
        return None

    return read


def _wikitext_hub(corpus: Corpus, split: str, n_docs: int) -> str:
    import datasets  # optional: only needed without local files

    rows = datasets.load_dataset(corpus.hub_id, corpus.hub_config, split=split)
    return "".join(rows["text"])


def _doc_split(index: int) -> str:
    """Document-level split of a streamed corpus: no document spans two splits."""
    bucket = index % 100
    return "validation" if bucket == 0 else "test" if bucket == 1 else "train"


# Where a local copy of a document corpus may sit under the data folder, in order: the hub's own
# layout (a download of HuggingFaceTB/smollm-corpus keeps cosmopedia-v2/train-000NN-of-00104.parquet),
# then the data folder itself (a copy of just that folder's shards, or cosmopedia*.jsonl files).
DOCUMENT_FOLDERS = ("cosmopedia-v2", "smollm-corpus/cosmopedia-v2", ".")
# (datasets builder, file patterns): the hub's parquet shards first, else JSON lines of {"text": ...}.
DOCUMENT_FORMATS = (("parquet", ("train-*.parquet", "cosmopedia*.parquet")),
                    ("json", ("cosmopedia*.jsonl", "train-*.jsonl")))


def document_files(data_dir: Path) -> Optional[tuple]:
    """(builder, sorted files) of the first folder of :data:`DOCUMENT_FOLDERS` holding documents,
    parquet before JSON lines (one form, never both: the sample ships the same rows as each); None
    when there are none. Sorted names keep the hub's shard order."""
    for sub in DOCUMENT_FOLDERS:
        folder = data_dir / sub
        for builder, patterns in DOCUMENT_FORMATS:
            files = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
            if files:
                return builder, files
    return None


def _documents_local(data_dir: Path, n_docs: int) -> Optional[Iterator[str]]:
    """The first `n_docs` documents' text from local files (:func:`document_files`), streamed with
    `datasets` (row by row: nothing is copied into the datasets cache, and a run reads only the
    shards its documents are in)."""
    found = document_files(data_dir)
    if found is None:
        return None
    builder, files = found
    try:
        import datasets
    except ImportError as exc:
        raise DataError(f"reading {files[0].parent} needs the datasets package: pip install datasets") from exc

    def docs() -> Iterator[str]:
        try:
            rows = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train",
                                         streaming=True)
            for i, row in zip(range(n_docs), rows):
                text = row.get("text")
                if not isinstance(text, str):
                    raise DataError(f"document {i} under {files[0].parent} has no text column of strings "
                                    f"(columns: {', '.join(row)}); cosmopedia rows hold their text in 'text'")
                yield text
        except DataError:
            raise
        except Exception as exc:  # a damaged shard, a JSON syntax error: name the files
            raise DataError(f"could not read the {builder} files under {files[0].parent} "
                            f"({type(exc).__name__}: {exc})") from exc

    return docs()


def _join_split(docs: Iterator[str], split: str) -> str:
    return "\n\n".join(text for i, text in enumerate(docs) if _doc_split(i) == split)


def _cosmopedia_local(n_docs: int) -> Callable[[Path, str], Optional[str]]:
    def read(data_dir: Path, split: str) -> Optional[str]:
        docs = _documents_local(data_dir, n_docs)
        return None if docs is None else _join_split(docs, split)

    return read


def _cosmopedia_hub(corpus: Corpus, split: str, n_docs: int) -> str:
    import datasets

    stream = datasets.load_dataset(corpus.hub_id, corpus.hub_config, split="train", streaming=True)
    docs = (row["text"] for i, row in zip(range(n_docs), stream))
    return _join_split(docs, split)


def corpora(stream_documents: int) -> dict:
    return {
        "wikitext2": Corpus("wikitext2", "Salesforce/wikitext", "wikitext-2-v1",
                            _wikitext_reader("tokens", "wikitext-2-tokenized"), _wikitext_hub),
        "wikitext2-raw": Corpus("wikitext2-raw", "Salesforce/wikitext", "wikitext-2-raw-v1",
                                _wikitext_reader("raw", "wikitext-2-raw"), _wikitext_hub),
        "cosmopedia": Corpus("cosmopedia", "HuggingFaceTB/smollm-corpus", "cosmopedia-v2",
                             _cosmopedia_local(stream_documents), _cosmopedia_hub),
    }


CORPUS_NAMES = tuple(corpora(1))


# ----------------------------------------------------------------------------- tokenizer

def _env_path(explicit: Optional[str], env: str) -> Optional[Path]:
    value = explicit or os.environ.get(env)
    return Path(value).expanduser() if value else None


def tokenizer_file(tokenizer_dir: Optional[str]) -> Optional[Path]:
    folder = _env_path(tokenizer_dir, "PLASA_TOKENIZER_DIR")
    if folder is None:
        return None
    for candidate in (folder / "tokenizer.json", folder / "tokenizers" / "smollm-135m" / "tokenizer.json",
                      folder / "smollm-135m" / "tokenizer.json"):
        if candidate.is_file():
            return candidate
    raise DataError(_no_data_message("the tokenizer", f"no tokenizer.json under {folder}"))


def load_tokenizer(name: str, tokenizer_dir: Optional[str] = None):
    """Returns (tokenizers.Tokenizer, identity hash). Local tokenizer.json first, then the hub.

    ``tokenizers.Tokenizer`` is used directly: transformers 5's AutoTokenizer drops SmolLM's
    Digits pre-tokenizer.
    """
    from tokenizers import Tokenizer

    path = tokenizer_file(tokenizer_dir)
    if path is not None:
        raw = path.read_bytes()
        return Tokenizer.from_str(raw.decode("utf-8")), hashlib.sha256(raw).hexdigest()
    try:
        tok = Tokenizer.from_pretrained(name)
    except Exception as exc:  # no network, unknown id
        raise DataError(_no_data_message(f"tokenizer {name}", f"{type(exc).__name__}: {exc}")) from exc
    return tok, hashlib.sha256(tok.to_str().encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- cache

def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _read_cached(npy: Path, manifest_path: Path, expect: dict) -> Optional[np.ndarray]:
    """The cached array if its manifest matches `expect` and its checksum holds, else None."""
    try:
        manifest = json.loads(manifest_path.read_text())
        raw = npy.read_bytes()
    except (OSError, ValueError):
        return None
    if any(manifest.get(k) != v for k, v in expect.items()):
        log.info("cache entry %s is stale; rebuilding", npy.name)
        return None
    if hashlib.sha256(raw).hexdigest() != manifest.get("npy_sha256"):
        log.warning("cache entry %s is corrupted; rebuilding", npy.name)
        return None
    import io

    array = np.load(io.BytesIO(raw), allow_pickle=False)
    return array if len(array) == manifest.get("count") else None


def _encode(tokenizer, text: str) -> np.ndarray:
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    dtype = np.uint16 if tokenizer.get_vocab_size() <= np.iinfo(np.uint16).max + 1 else np.uint32
    return np.asarray(ids, dtype=dtype)


def load_tokens(dataset: str, split: str, tokenizer_name: str, *, data_dir: Optional[str] = None,
                tokenizer_dir: Optional[str] = None, stream_documents: int = SPEC.stream_documents,
                tokenizer=None) -> np.ndarray:
    """Token ids of one split (uint16/uint32), from the cache or built into it."""
    table = corpora(stream_documents)
    if dataset not in table:
        raise DataError(f"unknown dataset {dataset!r}; choose one of {', '.join(table)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    corpus = table[dataset]
    folder = _env_path(data_dir, "PLASA_DATA_DIR")
    text = corpus.read_local(folder, split) if folder is not None else None
    if text is not None:
        source = hashlib.sha256(text.encode("utf-8")).hexdigest()
    else:
        source = f"hub:{corpus.hub_id}/{corpus.hub_config}/{split}/{stream_documents}"
    if tokenizer is None:
        tokenizer, tok_hash = load_tokenizer(tokenizer_name, tokenizer_dir)
    else:
        tok_hash = hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()

    expect = {"format": CACHE_FORMAT, "dataset": dataset, "split": split,
              "source_sha256": source, "tokenizer_sha256": tok_hash}
    key = hashlib.sha256(json.dumps(expect, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_dir() / "tokens"
    npy = root / f"{dataset}-{split}-{key}.npy"
    manifest_path = npy.with_suffix(".json")

    cached = _read_cached(npy, manifest_path, expect)
    if cached is not None:
        return cached
    with locked(npy.with_suffix(".lock")):
        cached = _read_cached(npy, manifest_path, expect)  # another process may have built it
        if cached is not None:
            return cached
        if text is None:
            try:
                text = corpus.read_hub(corpus, split, stream_documents)
            except Exception as exc:
                where = f"no local files under {folder}" if folder else "no --data-dir given"
                raise DataError(_no_data_message(
                    f"{dataset}/{split}", f"{where}, and the hub failed ({type(exc).__name__})")) from exc
        log.info("tokenizing %s/%s (%d characters) into %s", dataset, split, len(text), root)
        tokens = _encode(tokenizer, text)
        raw = _npy_bytes(tokens)
        atomic_write(npy, raw)
        manifest = dict(expect, count=int(len(tokens)), dtype=str(tokens.dtype),
                        npy_sha256=hashlib.sha256(raw).hexdigest())
        atomic_write(manifest_path, json.dumps(manifest, indent=1).encode())
        return tokens


@dataclass(frozen=True)
class TokenData:
    train: np.ndarray
    eval: np.ndarray
    eval_split: str
    tokenizer_sha256: str
    vocab_size: int


def load_benchmark_data(spec, *, data_dir: Optional[str] = None,
                        tokenizer_dir: Optional[str] = None) -> TokenData:
    """The train split and the scored split (validation or test) for a spec."""
    tokenizer, tok_hash = load_tokenizer(spec.tokenizer, tokenizer_dir)
    common = dict(data_dir=data_dir, tokenizer_dir=tokenizer_dir,
                  stream_documents=spec.stream_documents, tokenizer=tokenizer)
    train = load_tokens(spec.dataset, "train", spec.tokenizer, **common)
    scored = load_tokens(spec.dataset, spec.split, spec.tokenizer, **common)
    return TokenData(train=train, eval=scored, eval_split=spec.split, tokenizer_sha256=tok_hash,
                     vocab_size=tokenizer.get_vocab_size())


def train_windows(tokens: np.ndarray, steps: int, batch: int, seq_len: int, seed: int) -> np.ndarray:
    """(steps, batch, seq_len + 1) int64 random contiguous windows from the evaluator's generator."""
    rng = np.random.default_rng([seed, 0x5EED])
    starts = rng.integers(0, len(tokens) - seq_len - 1, size=(steps, batch))
    return tokens[starts[..., None] + np.arange(seq_len + 1)].astype(np.int64)


def eval_windows(tokens: np.ndarray, seq_len: int, max_targets: Optional[int]) -> tuple:
    """Non-overlapping (inputs, targets) int64, each (n, seq_len); every target scored once."""
    n = (len(tokens) - 1) // seq_len
    if max_targets is not None:
        n = min(n, max(1, max_targets // seq_len))
    flat = tokens[: n * seq_len + 1].astype(np.int64)
    return flat[:-1].reshape(n, seq_len), flat[1:].reshape(n, seq_len)
