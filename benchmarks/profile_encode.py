"""Where encode's time goes on CPU: torch.profiler over MiniLM on BBC documents or sentences.

    python benchmarks/profile_encode.py                     # 64 whole BBC documents at 256 tokens
    python benchmarks/profile_encode.py --sentences --n 400 --max-length 128
    python benchmarks/profile_encode.py --batch-tokens 4096 --threads 2

Groups the operators' self CPU time into matmuls (Linear), attention (SDPA and its pieces),
GELU, layer norm, softmax, copies/reshapes and the rest, and prints each group's share.
Shares stay roughly valid on a loaded machine (every group slows alike); the absolute times
do not: measure speed with benchmarks/encode.py on a quiet machine.
Writes benchmarks/results/profile-encode.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from encode import bbc_documents, bbc_root, bbc_sentences   # benchmarks/encode.py, beside this file
from embcache.pipeline.encode import EncodeConfig, encode
from embcache.pipeline.model import load_model, load_tokenizer, resolve_model
from embcache.pipeline.tokenize import TokenizeConfig, tokenize

RESULTS = Path(__file__).resolve().parent / "results" / "profile-encode.json"
GROUPS = (   # (group, substrings of aten operator names), first match wins
    ("matmul", ("addmm", "aten::mm", "bmm", "matmul", "linear", "mkldnn")),
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "baddbmm")),
    ("softmax", ("softmax",)),
    ("gelu", ("gelu",)),
    ("layer_norm", ("layer_norm",)),
    ("copies", ("copy_", "contiguous", "clone", "to_copy", "cat", "transpose", "permute", "view", "reshape",
                "expand", "empty", "fill_", "zero_", "index", "embedding", "slice", "select", "as_strided")),
    ("elementwise", ("add", "mul", "div", "sub", "where", "masked", "tanh", "sum", "mean", "rsub")),
)


def group_of(name: str) -> str:
    lowered = name.lower()
    return next((g for g, keys in GROUPS if any(k in lowered for k in keys)), "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="documents (or sentences) to encode")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--sentences", action="store_true", help="BBC sentences instead of whole documents")
    parser.add_argument("--batch-tokens", type=int, default=EncodeConfig.batch_tokens)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    texts = (bbc_sentences if args.sentences else bbc_documents)(bbc_root(), args.n, args.seed)
    path = resolve_model(None)
    tokenizer, model = load_tokenizer(path), load_model(path)
    ids = tokenize(texts, tokenizer, TokenizeConfig(max_length=args.max_length)).column("input_ids")
    config = EncodeConfig(batch_tokens=args.batch_tokens, threads=args.threads, backend="torch")
    encode(ids[:8], model, config)                                            # warm-up, untimed
    from torch.profiler import ProfilerActivity, profile
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        encode(ids, model, config)
    wall = time.perf_counter() - start
    by_group, by_op = defaultdict(float), defaultdict(float)
    for e in prof.key_averages():
        if e.key.startswith("aten::") or e.key.startswith("mkldnn"):
            by_group[group_of(e.key)] += e.self_cpu_time_total
            by_op[e.key] += e.self_cpu_time_total
    total = sum(by_group.values()) or 1.0
    report = {"setup": {"texts": len(texts), "what": "sentences" if args.sentences else "whole BBC documents",
                        "max_length": args.max_length, "batch_tokens": args.batch_tokens, "threads": args.threads,
                        "torch": torch.__version__, "attn_implementation": model.config._attn_implementation,
                        "wall_seconds_under_profiler": round(wall, 2)},
              "share_by_group": {g: round(v / total, 3) for g, v in sorted(by_group.items(), key=lambda x: -x[1])},
              "top_ops_share": {k: round(v / total, 3) for k, v in sorted(by_op.items(), key=lambda x: -x[1])[:15]}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
