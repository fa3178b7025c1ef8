"""The demo's BERT settings: head accuracy of cheaper encodings against today's fp32 (issue 29, item 5).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/demo_choice.py                 # ~3 full BBC encodes
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/demo_choice.py --every 10 --seeds 2   # a smoke run

Every BBC document (2,225, 5 topics) is encoded as the demo does (packaged MiniLM, mean
pooling, l2, truncated at --max-length) under each setting: fp32 on torch (today's demo,
the baseline), ONNX Runtime int8 per channel, and the same at 128 tokens. A linear head
(HeadConfig defaults) trains on each, on --seeds seeded stratified 80/10/10 splits (seed 0
is the demo's own split); printed: test accuracy per split, mean, and the paired difference
to the baseline (mean and spread over splits), plus each setting's mean cosine to fp32.
Accuracy does not depend on load; the encode seconds printed here do (quiet figures come
from benchmarks/encode.py and the demo itself).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from long_documents import bbc_with_labels          # benchmarks/long_documents.py, beside this file

SETTINGS = {            # name -> (max_length, EncodeConfig fields)
    "fp32-256": (256, {"backend": "torch"}),
    "int8-channel-256": (256, {"quantize": "int8-channel"}),
    "fp32-128": (128, {"backend": "torch"}),
    "int8-channel-128": (128, {"quantize": "int8-channel"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", nargs="+", default=["fp32-256", "int8-channel-256", "fp32-128"],
                    choices=list(SETTINGS), help="the first is the baseline")
    ap.add_argument("--seeds", type=int, default=5, help="stratified splits (seed 0: the demo's)")
    ap.add_argument("--every", type=int, default=1, help="every n-th document only (a smoke run)")
    args = ap.parse_args()
    from embcache.pipeline.configs import EncodeConfig, HeadConfig, TokenizeConfig
    from embcache.pipeline.encode import encode, quantization_fidelity
    from embcache.pipeline.heads import predict_proba, train_head
    from embcache.pipeline.model import resolve_model, resolve_normalize
    from embcache.pipeline.splits import stratified_split
    from embcache.pipeline.tokenize import tokenize
    from embcache.stages.bert import cached_encoder, cached_tokenizer

    texts, labels, names = bbc_with_labels()
    texts, labels = texts[::args.every], labels[::args.every]
    path = resolve_model(None)
    vectors, seconds = {}, {}
    for name in args.settings:
        max_length, fields = SETTINGS[name]
        ids = tokenize(texts, cached_tokenizer(path), TokenizeConfig(max_length=max_length)).column("input_ids")
        config = EncodeConfig(normalize=resolve_normalize("auto", path), **fields)
        model = cached_encoder(None, path, config, None)
        start = time.perf_counter()
        vectors[name] = encode(ids, model, config)
        seconds[name] = time.perf_counter() - start
        print(f"{name}: {len(texts)} documents in {seconds[name]:.0f} s ({type(model).__name__}; under whatever "
              f"load this machine has)", flush=True)
    base = args.settings[0]
    accs = {}
    for name, x in vectors.items():
        accs[name] = []
        for seed in range(args.seeds):
            parts = stratified_split(labels, seed=seed)
            head, _ = train_head(x[parts["train"]], labels[parts["train"]], x[parts["validation"]],
                                 labels[parts["validation"]], len(names), HeadConfig())
            pred = predict_proba(head, x[parts["test"]]).argmax(1)
            accs[name].append(float((pred == labels[parts["test"]]).mean()))
    print(f"\n| setting | test accuracy per split (seeds 0..{args.seeds - 1}) | mean | vs {base}: mean (min, max) "
          f"of the paired differences, pt | mean cosine to fp32 (same length) |")
    print("|---|---|---:|---|---:|")
    for name, a in accs.items():
        diff = 100 * (np.array(a) - np.array(accs[base]))
        same = next((b for b in vectors if b.startswith("fp32") and SETTINGS[b][0] == SETTINGS[name][0]), None)
        cos = quantization_fidelity(vectors[same], vectors[name])["mean_cosine"] if same else float("nan")
        print(f"| {name} | {' / '.join(f'{v:.4f}' for v in a)} | {np.mean(a):.4f} | "
              f"{diff.mean():+.2f} ({diff.min():+.2f}, {diff.max():+.2f}) | {cos:.4f} |")


if __name__ == "__main__":
    main()
