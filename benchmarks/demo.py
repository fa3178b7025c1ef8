"""The demo as a user meets it: the first run, a no-op re-run, +1 % new documents (issues 25, 29).

    flock /tmp/embcache-bench.lock .venv/bin/python benchmarks/demo.py

1. `embcache --store S demo` on a fresh store (the first run users wait for), then again
   (the no-op: nothing changed, Prefect not started);
2. the same run config (the embedded demo's [bert], BBC as a folder source) on a copy of BBC
   without 1 % of its documents, in a fresh store: the first run, a no-op, the 1 % copied back
   in new files (+1 %), a no-op after.
Each figure is the whole `embcache` process (imports, Prefect's temporary server, the flow,
the report), wall seconds, as a user times it; the run record's stage times beside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EMBCACHE = [sys.executable, "-c", "import sys; sys.argv[0] = 'embcache'; from embcache.cli.main import run; run()"]


def timed(args: list[str], env: dict) -> tuple[float, dict | None]:
    t = time.perf_counter()
    proc = subprocess.run(EMBCACHE + args, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"embcache {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    record = None
    if "--json" in args:
        record = json.loads(proc.stdout.strip().splitlines()[-1])
    return wall, record


def stages(record: dict | None) -> str:
    if not record:
        return ""
    return "  ".join(f"{s['stage']} {s['seconds']:.1f}" for s in record["stages"] if s["seconds"] >= 0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/embcache-demo-bench"))
    ap.add_argument("--fraction", type=float, default=0.01, help="share of BBC held back, then added")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-demo", action="store_true", help="only the run-config half")
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    print(f"load: {' '.join(f'{x:.2f}' for x in os.getloadavg())} · {os.cpu_count()} CPUs", flush=True)
    if not args.skip_demo:
        store = args.workdir / "demo-store"
        for what in ("demo, first run", "demo, no-op"):
            wall, _ = timed(["--store", str(store), "demo"], env)
            print(f"  {what:<28} {wall:7.1f} s", flush=True)

    from embcache.flows.run_config import default_corpus_root
    try:
        from embcache.flows.run_config import demo_bert
    except ImportError:                     # a checkout from before issue 29 (PYTHONPATH): its demo ran the defaults
        def demo_bert() -> dict:
            return {}
    import yaml
    bbc = Path(default_corpus_root())
    copy, held = args.workdir / "bbc", args.workdir / "held-back"
    shutil.copytree(bbc, copy)
    files = sorted(copy.glob("*/*.txt"))
    rng = random.Random(args.seed)
    back = rng.sample(files, max(1, round(len(files) * args.fraction)))
    for f in back:                                      # held back, then added as new files
        target = held / f.parent.name / f"new-{f.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f, target)
    config = args.workdir / "demo.yaml"
    config.write_text(yaml.safe_dump({"store": str(args.workdir / "run-store"), "bert": demo_bert(),
                                      "corpora": [{"name": "bbc", "sources": [{"path": str(copy),
                                                                              "format": "folder"}]}]}))
    print(f"run config: {config} ({len(files) - len(back):,} documents, then +{len(back)})", flush=True)
    results = {}
    for what in ("first run", "no-op", "+1 % new documents", "no-op after"):
        if what.startswith("+"):
            for f in held.glob("*/*.txt"):
                shutil.copy(f, copy / f.parent.name / f.name)
        wall, record = timed(["run", str(config), "--json"], env)
        results[what] = wall
        print(f"  {what:<28} {wall:7.1f} s   {stages(record)}", flush=True)
    print(f"  +1 % / first run = {results['+1 % new documents'] / results['first run']:.3f}")
    print(f"load at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    if importlib.util.find_spec("embcache") is None:
        sys.exit("install embcache first (make setup)")
    main()
