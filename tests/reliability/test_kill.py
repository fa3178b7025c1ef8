"""kill -9 of a real `embcache` process at seeded random points; the re-run equals a clean run.

Each point starts one writing command (`ingest`, `featurize bert`, `featurize word2vec`)
on the fault corpus, watches the store from outside (inotify: a shard's temp file
appears, a shard is renamed into place, a manifest is replaced) or the process's own
output, and SIGKILLs it at the nth such event, at once (inside the commit the event
announces) or after a seeded random delay (inside the computation that follows). No
hook in the product code: what the store shows is all the test knows.

After each kill: what was committed is intact (checksums) and is a subset of the clean
run; then the same command re-run to its end, `embcache gc --grace 0`, and the store
must equal the clean run's (same keys per table, each committed once, bit-identical rows
where the shard plan is the same, vectors within 1e-5 otherwise, one snapshot), with no
file left that no manifest lists, and `embcache verify` clean.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from dataclasses import dataclass

import pytest

from embcache.storage import FeatureStore
from embcache.storage.maintenance import verify

from .conftest import FLOW_STARTED
from .store_compare import committed_subset, compare_stores, interrupted_commits, unaccounted_files
from .store_watch import Trigger, run_watched

SEED = 20261121
# Per stage: the command, then store events that open a commit window (kill at once: the
# temp file half written, the shard in place but unlisted, the manifest being replaced,
# the manifest replaced but the name's pointer not yet),
# then events after which work follows (kill a seeded random delay later, in [lo, hi] s;
# after the flow's start, [lo, hi] is a fraction of the clean run's lead: the time from
# the flow's start to its first store event, i.e. reading and checking the sources).
# The nth bounds are the clean run's counts (test_clean_runs_commit_as_planned checks them).
STAGES = {
    "ingest": ("ingest",
               [("shard_tmp:documents", 1), ("shard:documents", 1), ("manifest_tmp:documents", 1),
                ("snapshot", 1), ("shard_tmp:rejected", 1), ("shard:rejected", 1), ("corpus_manifest_tmp", 2)],
               [(f"log:{FLOW_STARTED}", 1, 0.1, 0.9), ("manifest:documents", 1, 0.0, 0.04),
                ("manifest:rejected", 1, 0.0, 0.04)]),
    "encode": ("bert",
               [("shard_tmp:bert_features", 12), ("shard:bert_features", 12), ("manifest_tmp:bert_features", 12),
                ("manifest:bert_tokens", 1)],
               [("manifest:bert_tokens", 1, 0.0, 0.4), ("manifest:bert_features", 11, 0.0, 0.2)]),
    "examples": ("word2vec",
                 [("shard_tmp:w2v_examples", 3), ("shard:w2v_examples", 3), ("manifest_tmp:w2v_examples", 3),
                  ("manifest:w2v_vocab", 1)],
                 [("manifest:w2v_vocab", 1, 0.0, 0.2), ("manifest:w2v_examples", 2, 0.0, 0.1)]),
}
POINTS_PER_STAGE = {"ingest": 7, "encode": 8, "examples": 8}


@dataclass(frozen=True)
class KillPoint:
    number: int
    stage: str            # ingest | encode | examples
    command: str          # the embcache command killed: ingest | bert | word2vec
    trigger: Trigger

    def __str__(self) -> str:
        t = self.trigger
        if t.event.startswith("log:"):
            return f"{self.number:02d}-{self.stage}-flow-start+{t.delay:.2f}xlead"
        return f"{self.number:02d}-{self.stage}-{t.event}#{t.nth}+{t.delay:.3f}s"

    def at(self, lead: float) -> Trigger:
        """The trigger in seconds: a delay after the flow's start is a fraction of `lead`."""
        t = self.trigger
        return Trigger(t.event, t.nth, round(t.delay * lead, 3)) if t.event.startswith("log:") else t


def kill_plan(seed: int = SEED) -> list[KillPoint]:
    """Seeded random points: per stage, alternately inside a commit and in the work between commits."""
    rng = random.Random(seed)
    plan, seen = [], set()
    for stage, n in POINTS_PER_STAGE.items():
        command, commits, work = STAGES[stage]
        while (i := sum(p.stage == stage for p in plan)) < n:
            if i % 2 == 0:          # uniform over every (event, nth) the clean run has
                event, nth = rng.choice([(e, k) for e, n in commits for k in range(1, n + 1)])
                trigger = Trigger(event, nth, 0.0)
            else:
                event, nth, lo, hi = rng.choice([(e, k, lo, hi) for e, n, lo, hi in work for k in range(1, n + 1)])
                trigger = Trigger(event, nth, round(rng.uniform(lo, hi), 3))
            if (stage, trigger) not in seen:
                seen.add((stage, trigger))
                plan.append(KillPoint(len(plan) + 1, stage, command, trigger))
    return plan


PLAN = kill_plan()
RECORD: dict[str, dict] = {}          # str(point) -> what the kill hit (for the coverage test)


def test_clean_runs_commit_as_planned(fault_runs):
    """The plan's nth bounds are real: the clean runs commit that many shards, and stores are tidy."""
    ev = fault_runs.events
    # one documents commit (new texts are committed 50,000 at a time); rejects before the snapshot
    assert ev["ingest"]["manifest:documents"] == 1 and ev["ingest"]["manifest:rejected"] == 1
    assert ev["bert"]["manifest:bert_tokens"] == 1 and ev["bert"]["manifest:bert_features"] == 12
    assert ev["word2vec"]["manifest:w2v_vocab"] == 1 and ev["word2vec"]["manifest:w2v_examples"] == 3
    for root in fault_runs.clean.values():
        assert interrupted_commits(root) == [] and unaccounted_files(root) == []
        assert verify(FeatureStore(root)).ok


@pytest.mark.parametrize("point", PLAN, ids=str)
def test_kill_then_rerun_equals_clean_run(point, fault_runs, embcache_cli, tmp_path):
    command, args = point.command, fault_runs.commands[point.command]
    clean = fault_runs.clean[command]
    store = fault_runs.fresh_store(command, tmp_path / "store")

    w = run_watched(lambda: embcache_cli.spawn(store, *args), store, point.at(fault_runs.lead[command]))
    if not w.killed:          # it finished before the point came (the event was missed, or late)
        assert w.code == fault_runs.codes[command], f"exit {w.code}: see {embcache_cli.logs}"
    left = interrupted_commits(store)
    committed = committed_subset(store, clean)            # nothing committed that a clean run lacks
    report = verify(FeatureStore(store))
    assert report.ok, f"after the kill, committed files are damaged: {report.bad}"
    phase = {"ingest": "ingest",
             "bert": "encode" if "bert_tokens" in committed else "tokenize",
             "word2vec": "examples" if "w2v_vocab" in committed else "vocabulary"}[command]
    RECORD[str(point)] = {"killed": w.killed, "phase": phase, "in_commit": bool(left), "left": left,
                          "committed_shards": committed, "fired": w.killed_after,
                          "seconds": round(w.ended - w.started, 2)}

    embcache_cli.run(store, *args, code=fault_runs.codes[command])      # the re-run, to its end
    embcache_cli.run(store, "gc", "--grace", "0")
    assert unaccounted_files(store) == [], "files no manifest lists survived gc"
    _, out = embcache_cli.run(store, "verify")
    assert " 0 bad" in out, out
    stats = compare_stores(store, clean)
    RECORD[str(point)]["stats"] = {k: v for k, v in stats.items() if v.get("replanned_keys")}


def test_kill_points_cover_every_stage_and_commits():
    """At least 20 real kills, spread over ingest, BERT encode, example generation, and inside commits."""
    if len(RECORD) < len(PLAN):
        pytest.skip("runs after the whole plan only")
    killed = {p: r for p, r in RECORD.items() if r["killed"]}
    lines = [f"{p:44} {'KILLED ' + r['phase'] if r['killed'] else 'finished first':17} {r['seconds']:5.1f} s  "
             f"{'in commit: ' + ', '.join(r['left'])[:70] if r['in_commit'] else 'between commits':81} "
             + " ".join(f"{t}: {v['replanned_keys']} keys replanned" for t, v in r.get("stats", {}).items())
             for p, r in RECORD.items()]
    summary = "\n".join(lines)
    print("\n" + summary)
    phases = Counter(r["phase"] for r in killed.values())
    assert len(killed) >= 20, summary
    assert all(phases[s] >= 4 for s in ("ingest", "encode", "examples")), f"{phases}\n{summary}"
    assert sum(r["in_commit"] for r in killed.values()) >= 4, summary


@pytest.mark.parametrize("table, command", [("w2v_vocab", "word2vec"), ("rejected", "ingest")])
def test_a_commit_cut_before_its_pointer_is_kept_and_finished(table, command, fault_runs, embcache_cli, tmp_path):
    """The state a kill between a table's manifest and its name's pointer leaves, made exactly.

    Seen for real (a kill at manifest:w2v_vocab#1): the re-run found the vocabulary
    committed, wrote nothing, and the name never resolved again. gc must keep such a
    table (`rejected` is referenced by its pointer only), and the re-run must finish the
    commit: the store then equals the clean run.
    """
    store = tmp_path / "store"
    shutil.copytree(fault_runs.clean[command], store)
    (store / "tables" / table / "current.json").unlink()
    fp = FeatureStore(fault_runs.clean[command]).resolve(table)
    embcache_cli.run(store, "gc", "--grace", "0")
    assert (store / "tables" / table / fp / "manifest.json").exists(), "gc removed a committed table"
    embcache_cli.run(store, *fault_runs.commands[command], code=fault_runs.codes[command])
    compare_stores(store, fault_runs.clean[command])
