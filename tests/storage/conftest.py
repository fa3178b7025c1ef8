import hashlib

import numpy as np
import pyarrow as pa
import pytest

from embcache.storage import FeatureStore, spec


def sha(i: int) -> str:
    return hashlib.sha256(f"doc-{i}".encode()).hexdigest()


def feature_rows(ids, dim: int = 16, seed: int = 0) -> pa.Table:
    """Rows like bert_features: a content key, a float32 vector, token ids; values depend only on the id."""
    ids = list(ids)
    vecs = np.stack([np.random.default_rng(seed * 1_000_003 + i).standard_normal(dim) for i in ids]).astype(np.float32) \
        if ids else np.zeros((0, dim), np.float32)
    tokens = [list(range(i % 7, i % 7 + 5 + i % 11)) for i in ids]
    return pa.table({
        "text_sha": pa.array([sha(i) for i in ids], pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel(), pa.float32()), dim),
        "input_ids": pa.array(tokens, pa.list_(pa.int32())),
    })


@pytest.fixture
def store(tmp_path) -> FeatureStore:
    return FeatureStore(tmp_path / "store")


@pytest.fixture
def features_spec() -> dict:
    return spec("encode", 1, {"pooling": "mean", "max_length": 128}, inputs={"bert_tokens": "0" * 64},
                digests={"weights": "ab" * 32})
