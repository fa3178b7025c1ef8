"""The end-to-end run (`embcache run`, what `make demo` runs): first run, second run, Prefect's overhead.

    python benchmarks/end_to_end.py [--repeat 5]    # ~10 min on 2 cores (~35 with --repeat 5)

1. First run: `embcache --store S1 run --json` in a fresh process, as `make demo` runs it
   (BBC news, packaged MiniLM, word2vec, linear head, GloVe classifier, report): wall
   time of the process (goal ≤ 10 min on 2 cores) and seconds per stage.
2. Second run, right after, same store: wall time (goal ≤ 30 s) and what it computed
   (goal: nothing).
3. Baseline: the same units of work called directly, without Prefect (`--direct STORE`:
   the functions the flows' tasks wrap, in the same order with the same shard plan and
   the same two example workers, on a fresh store S2), in a fresh process. Prefect's
   overhead = wall(1) - wall(3), as a fraction of wall(1) (goal ≤ 5 %): its temporary API
   server, flow and task runs, logging (Prefect's default level, as users get it), and
   the run's bookkeeping (stage ledger, run record). The first run also times every
   HTTP request Prefect's clients send its server (flow runs, their states, subflows'
   task runs; the log batches a background thread posts are counted apart).

Encoding 2,225 documents varies by ±5 % from run to run on a shared 2-core machine, as
much as the overhead itself; `--repeat N` runs N pairs of a first run and a baseline in
ABBA order (F D, D F, F D, ...: a steady drift of the machine's speed cancels; fresh
stores each), and gives the overhead from the medians of each and as the median of the
pairs' differences. So the overhead is also taken apart, without that noise:
4. Both runs time the encoding itself (every call of embcache.stages.bert.encode_shard, the
   function the flow's encode task wraps and the baseline calls). What a run spends
   outside it is compared: overhead outside encoding = (wall(1) - encoding(1)) -
   (wall(3) - encoding(3)). Prefect's task runs around each shard count here.
5. What Prefect costs encoding itself (its threads and server share the 2 cores):
   the same shard encoded in one process, alternating, as the flow does it (a Prefect
   task run in a flow run) and directly: the median ratio of the two; plus the CPU the
   idle server takes per second (each CPU second of it counted as a lost wall second,
   the upper bound); both times the baseline's encoding seconds.
   Overhead = 4 + 5, per pair; the median of the pairs is reported beside the medians of 1 - 3.
Writes benchmarks/results/end_to_end.json (--out elsewhere). Sets of pairs taken on
different occasions go together with --pool A.json B.json: medians of all their pairs
with 95 % bootstrap intervals.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "end_to_end.json"
BIN = Path(sys.executable).parent


def time_encoding() -> list[float]:
    """Time every call of embcache.stages.bert.encode_shard (the flow's encode task looks it up per call).

    embcache.stages.bert imports torch, and a timed first run must still start its Prefect server
    before that: when it is not imported yet, it is patched right after
    TemporaryAPI.start, the first thing `embcache run` does.
    """
    seconds: list[float] = []

    def patch() -> None:
        bert = importlib.import_module("embcache.stages.bert")
        encode_shard = bert.encode_shard

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return encode_shard(*args, **kwargs)
            finally:
                seconds.append(time.perf_counter() - t)
        bert.encode_shard = timed

    if "embcache.stages.bert" in sys.modules:
        patch()
    else:
        from embcache.flows.temporary_api import TemporaryAPI
        start = TemporaryAPI.start

        def start_then_patch(self) -> None:
            start(self)
            TemporaryAPI.start = start
            patch()
        TemporaryAPI.start = start_then_patch
    return seconds


def time_api_calls() -> list[tuple[str, float]]:
    """(path, seconds) of every HTTP request Prefect's clients send (httpx, sync and async).

    Counts what the orchestration asks of its server: flow-run creation and states, task
    runs of subflows. Task runs' own states travel as events on a websocket, not here.
    """
    import httpx
    calls: list[tuple[str, float]] = []
    send, send_async = httpx.Client.send, httpx.AsyncClient.send

    def timed(self, request, **kwargs):
        t = time.perf_counter()
        try:
            return send(self, request, **kwargs)
        finally:
            calls.append((request.url.path, time.perf_counter() - t))

    async def timed_async(self, request, **kwargs):
        t = time.perf_counter()
        try:
            return await send_async(self, request, **kwargs)
        finally:
            calls.append((request.url.path, time.perf_counter() - t))
    httpx.Client.send, httpx.AsyncClient.send = timed, timed_async
    return calls


def first_run(store: str) -> dict:
    """`embcache --store STORE run --json` in this process, its encoding and API calls timed (`--flow STORE`)."""
    encoding = time_encoding()
    calls = time_api_calls()
    from embcache.cli.main import app
    try:
        app(["--store", store, "run", "--json"])
    except SystemExit as e:
        if e.code:
            raise
    waited = [(p, s) for p, s in calls if "/logs/" not in p]      # logs are sent from a background thread
    return {"encode_compute_s": round(sum(encoding), 3), "encode_calls": len(encoding),
            "api_calls": len(waited), "api_calls_s": round(sum(s for _, s in waited), 3),
            "api_log_posts": len(calls) - len(waited)}


def direct(store: str) -> dict:
    """The default run's stages with no Prefect: the units of work its flows call, timed."""
    from concurrent.futures import ThreadPoolExecutor

    from embcache.stages import bert, heads, planning, static as static_clf
    from embcache.stages import word2vec as w2v
    from embcache.stages.ingest import ingest_corpus
    from embcache.stages.report import write_report
    from embcache.flows.run import load_config
    from embcache.stages.word2vec_eval import evaluate, keyed_vectors
    from embcache.pipeline.cores import available_cores
    from embcache.pipeline.words import WordConfig

    encoding = time_encoding()
    cfg = load_config(None)
    corpus = cfg.corpus_list()[0]
    name, seconds = corpus.name, {}

    def timed(stage, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        seconds[stage] = round(time.perf_counter() - t, 2)
        return out

    timed("ingest", ingest_corpus, store, name, list(corpus.sources), cfg.ingest)

    def featurize_bert():
        plan = bert.plan_bert(store, bert.BertConfig(cfg.model, cfg.tokenize, cfg.encode, 4096, 512), "NFC")
        fs, documents, tokens, features = bert.tables(plan)
        wanted = planning.snapshot_keys(fs, name)
        for table, source, fn, size in ((tokens, documents, bert.tokenize_shard, 4096),
                                        (features, tokens, bert.encode_shard, 512)):
            for keys in planning.KeyBatches(planning.todo(table, source, wanted), size):
                fn(plan, keys)
            fs.corpus(name).link(table.name, table.fingerprint)
    timed("featurize-bert", featurize_bert)

    def featurize_word2vec():
        vocab = w2v.build_vocab(store, name, cfg.words, keep=True)
        config = w2v.ExamplesConfig(cfg.words, cfg.skipgram, cfg.word2vec.epochs_of_examples,
                                    cfg.word2vec.seed, 256)
        plan = w2v.plan_examples(store, name, vocab["fingerprint"], config)
        fs, table = w2v.examples_table(plan)
        todo = planning.todo(table, w2v.documents_of(fs, name), planning.snapshot_keys(fs, name))
        with ThreadPoolExecutor(available_cores()) as pool:          # the flow keeps as many shards in flight
            list(pool.map(lambda keys: w2v.examples_shard(plan, keys), planning.KeyBatches(todo, 256)))
        if not table.exists():
            table.create()
        fs.corpus(name).link("w2v_examples", table.fingerprint)
        return table.fingerprint, vocab["fingerprint"]
    examples_fp, vocab_fp = timed("featurize-word2vec", featurize_word2vec)
    vectors = timed("train-word2vec", w2v.train_vectors, store, name, examples_fp, vocab_fp, cfg.sgns,
                    cfg.word2vec.seed)
    from embcache.storage import FeatureStore
    timed("evaluate-word2vec", lambda: evaluate(keyed_vectors(FeatureStore(store), vectors.fingerprint)))
    timed("train-head", heads.train, store, name, "head", cfg.head, None, 0)
    st = cfg.static_section
    timed("train-static", static_clf.train, store, name, st.name, st.vectors, cfg.static,
          WordConfig(min_count=1), st.vectors_format, 0)
    timed("report", write_report, store, None, [name])
    return {"stages": seconds, "encode_compute_s": round(sum(encoding), 3), "encode_calls": len(encoding)}


def encode_ab(store: str, rounds: int, docs: int = 64) -> dict:
    """What Prefect costs encoding itself, in one process (`--encode-ab STORE`).

    The same shard (the first `docs` texts of STORE's bert_tokens) is encoded `rounds`
    times each way, in alternating order (ABBA): as the flow does it (encode_task, a
    Prefect task run inside a flow run) and as the baseline does (bert.encode_shard
    called directly). Both arms time the encoding call itself (`time_encoding`): the task
    run around it is counted with the rest of the flow's overhead, outside encoding.
    The temporary server runs through both arms; what it takes from the 2 cores while
    encoding goes on is measured apart: its CPU seconds (/proc) per second of the direct
    arms, when nothing calls it. Counting each of its CPU seconds as a lost wall second
    is the upper bound.
    """
    import statistics

    from prefect import flow

    from embcache.stages import bert
    from embcache.flows.featurize_flows import encode_task
    from embcache.flows.temporary_api import TemporaryAPI

    plan = bert.plan_bert(store, bert.BertConfig(), "NFC")
    keys = bert.tables(plan)[2].keys().to_pylist()[:docs]
    encoding = time_encoding()

    with TemporaryAPI() as api, api.ready():
        server_cpu = [0.0]

        def in_prefect() -> float:
            encode_task(plan, keys, len(keys))
            return encoding[-1]

        def direct_call() -> float:
            before = _cpu_seconds(api.proc.pid)
            bert.encode_shard(plan, keys)
            server_cpu[0] += _cpu_seconds(api.proc.pid) - before
            return encoding[-1]

        @flow(name="encode-ab")
        def ab() -> tuple[list[float], list[float]]:
            direct_call()                                      # load the model, warm the caches
            a, b = [], []
            for i in range(rounds):
                if i % 2:
                    b.append(direct_call())
                    a.append(in_prefect())
                else:
                    a.append(in_prefect())
                    b.append(direct_call())
            return a, b
        server_cpu[0] = 0.0
        flow_s, direct_s = ab()
    ratios = [x / y for x, y in zip(flow_s, direct_s)]
    return {"docs": len(keys), "rounds": rounds, "in_prefect_s": [round(x, 3) for x in flow_s],
            "direct_s": [round(x, 3) for x in direct_s],
            "median_in_prefect_s": round(statistics.median(flow_s), 3),
            "median_direct_s": round(statistics.median(direct_s), 3),
            "slowdown_fraction": round(statistics.median(ratios) - 1, 4),
            "slowdown_fraction_mean": round(statistics.fmean(ratios) - 1, 4),
            "server_cpu_per_second": round(server_cpu[0] / sum(direct_s), 4)}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_process(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds (user + system, the process and the children it waited for), stdout).

    CPU seconds are what the work itself cost: unlike wall time they barely move when
    other processes share the cores, so the overhead is also given in CPU time.
    """
    import resource
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}     # Prefect's logging as users get it
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def pair_series(firsts: list[dict], directs: list[dict]) -> dict[str, list[float]]:
    """Per pair (first run − baseline): wall seconds, seconds outside encoding, encoding seconds."""
    pairs = list(zip(firsts, directs))
    return {"paired_wall_s": [f["wall_s"] - d["wall_s"] for f, d in pairs],
            "outside_encoding_s": [(f["wall_s"] - f["encode_compute_s"]) - (d["wall_s"] - d["encode_compute_s"])
                                   for f, d in pairs],
            "encoding_s": [f["encode_compute_s"] - d["encode_compute_s"] for f, d in pairs]}


def pool(paths: list[str]) -> dict:
    """The pairs of several result files together (`--pool`): medians with 95 % bootstrap intervals.

    One set of pairs is too few on a noisy machine: a pair's difference swings by ±10 s.
    The interval is scipy's percentile bootstrap of the median (pairs resampled, seed 0).
    """
    import numpy as np
    from scipy.stats import bootstrap

    firsts, directs = [], []
    for path in paths:
        result = json.loads(Path(path).read_text())
        firsts += result["first_runs"]
        directs += result["direct_runs"]
    first = statistics.median(f["wall_s"] for f in firsts)
    report = {"files": paths, "pairs": len(firsts), "first_run_median_s": first,
              "direct_median_s": statistics.median(d["wall_s"] for d in directs)}
    for name, values in pair_series(firsts, directs).items():
        ci = bootstrap((values,), np.median, confidence_level=0.95, method="percentile",
                       random_state=0).confidence_interval
        median = statistics.median(values)
        report[name] = {"values": [round(x, 1) for x in values], "median": round(median, 2),
                        "interval_95": [round(float(ci.low), 2), round(float(ci.high), 2)],
                        "median_fraction_of_first_run": round(median / first, 4),
                        "interval_95_fraction": [round(float(ci.low) / first, 4), round(float(ci.high) / first, 4)]}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--direct", metavar="STORE", help="(internal) run the stages without Prefect into STORE")
    parser.add_argument("--keep", metavar="DIR", help="put the stores in DIR (new) and keep them, "
                                                      "e.g. to open the first run's report")
    parser.add_argument("--repeat", type=int, default=1, help="first runs and baselines, alternating (default 1)")
    parser.add_argument("--encode-ab", metavar="STORE", help="(internal) encoding in and out of Prefect, interleaved")
    parser.add_argument("--rounds", type=int, default=30, help="rounds of the encoding A/B (default 30)")
    parser.add_argument("--flow", metavar="STORE", help="(internal) the first run, its encoding timed")
    parser.add_argument("--out", default=str(RESULTS), help=f"where the results go (default {RESULTS.relative_to(ROOT)})")
    parser.add_argument("--pool", nargs="+", metavar="JSON", help="take the pairs of these result files together")
    args = parser.parse_args()
    if args.pool:
        print(json.dumps(pool(args.pool), indent=2))
        return
    if args.flow:
        print(json.dumps(first_run(args.flow)))
        return
    if args.direct:
        print(json.dumps(direct(args.direct)))
        return
    if args.encode_ab:
        print(json.dumps(encode_ab(args.encode_ab, args.rounds)))
        return

    report = {"setup": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
                        "load_avg_1min_start": round(os.getloadavg()[0], 2), "repeat": args.repeat}}
    firsts, directs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        if args.keep:
            Path(args.keep).mkdir(parents=True)
            tmp = str(Path(args.keep).resolve())
        for i in range(args.repeat):
            first_store, direct_store = str(Path(tmp) / f"s1-{i}"), str(Path(tmp) / f"s2-{i}")

            def first() -> None:
                wall, cpu, out = timed_process([sys.executable, __file__, "--flow", first_store])
                *_, line, encoding = out.strip().splitlines()
                record = json.loads(line)
                firsts.append({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                               "flow_wall_s": record["wall_seconds"], **json.loads(encoding),
                               "stages": {s["stage"]: s["seconds"] for s in record["stages"]},
                               "summary": record["summary"], "rows_computed": record["rows_computed"]})
                if i == 0:
                    wall, cpu, out = timed_process([str(BIN / "embcache"), "--store", first_store, "run", "--json"])
                    record = json.loads(out.strip().splitlines()[-1])
                    report["second_run"] = {
                        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "flow_wall_s": record["wall_seconds"],
                        "computed": {s["stage"]: s["computed"] for s in record["stages"] if s["computed"]},
                        "rows_cached": record["rows_cached"]}

            def baseline() -> None:
                wall, cpu, out = timed_process([sys.executable, __file__, "--direct", direct_store])
                directs.append({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                                **json.loads(out.strip().splitlines()[-1])})

            for step in ((first, baseline) if i % 2 == 0 else (baseline, first)):   # ABBA: drift cancels
                step()
            print(f"pair {i + 1}/{args.repeat}: first run {firsts[-1]['wall_s']} s, direct {directs[-1]['wall_s']} s",
                  file=sys.stderr)
        _, _, out = timed_process([sys.executable, __file__, "--encode-ab", str(Path(tmp) / "s1-0"),
                                   "--rounds", str(args.rounds)])
        report["encode_ab"] = json.loads(out.strip().splitlines()[-1])
    report["first_runs"], report["direct_runs"] = firsts, directs
    report["prefect_overhead"] = {}
    for clock in ("wall_s", "cpu_s"):
        first = statistics.median(r[clock] for r in firsts)
        base = statistics.median(r[clock] for r in directs)
        report["prefect_overhead"][clock] = {"first_run_median": first, "direct_median": base,
                                             "seconds": round(first - base, 1),
                                             "fraction_of_first_run": round((first - base) / first, 4),
                                             "ratio_flow_over_direct": round(first / base, 4)}
    series = pair_series(firsts, directs)
    differences = series["paired_wall_s"]
    report["prefect_overhead"]["paired_wall_s"] = {
        "differences": [round(x, 1) for x in differences], "median_seconds": round(statistics.median(differences), 1),
        "median_fraction_of_first_run": round(statistics.median(
            (f["wall_s"] - d["wall_s"]) / f["wall_s"] for f, d in zip(firsts, directs)), 4)}
    slowdown = report["encode_ab"]["slowdown_fraction"] + report["encode_ab"]["server_cpu_per_second"]
    pairs = []
    for f, d, outside in zip(firsts, directs, series["outside_encoding_s"]):
        encoding = slowdown * d["encode_compute_s"]
        pairs.append({"outside_encoding_s": round(outside, 2), "encoding_s": round(encoding, 2),
                      "seconds": round(outside + encoding, 2),
                      "fraction_of_first_run": round((outside + encoding) / f["wall_s"], 4)})
    report["prefect_overhead"]["taken_apart"] = {
        "pairs": pairs, "median_seconds": round(statistics.median(p["seconds"] for p in pairs), 2),
        "median_fraction_of_first_run": round(statistics.median(p["fraction_of_first_run"] for p in pairs), 4)}
    report["setup"]["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
