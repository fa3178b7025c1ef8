"""The end-to-end pipeline: one Prefect flow, the stage flows as its subflows.

    per corpus: ingest → featurize-bert → featurize-word2vec → train-word2vec → evaluate-word2vec
                → train-head → train-static → compare (optional)      then: report

What runs comes from a run config (flows/run_config.py: TOML, YAML or the embedded
default). Every stage computes only what the store lacks. Featurize stages do so row by
row (their tables are keyed by content); training stages by identity: a stage whose
inputs (fingerprints of the tables it reads, the corpus snapshot's checksum, its config
and the code's format versions) are those of its last run in this store, and whose
model is still the current version, is skipped and its stored result reused
(`runs/stages/`). Each run leaves a record, `runs/<run_id>.json`: per stage, what was
computed and what came from the cache, and how long it took; `embcache report`
renders it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timezone

from prefect import flow, get_run_logger

from ..pipeline.decoding import describe
from ..stages import ledger, retrain, run_record
from ..storage import FeatureStore, NotFound

from . import runners
from .run_config import CorpusConfig, RunConfig, config_to_dict, load_config   # load_config: re-exported
from .training_stages import TRAINING_STAGES, CorpusRun, TrainingStage



# ---------------------------------------------------------------------------- the flow

class _Stages:
    """Collects one record per stage: what it computed, what the cache had, how long it took."""

    def __init__(self, log):
        self.records: list[dict] = []
        self.log = log

    def add(self, stage: str, corpus: str, start: float, computed: int, cached: int, unit: str,
            note: str = "", stale: dict | None = None, reason: str | None = None) -> dict:
        rec = {"stage": stage, "corpus": corpus, "seconds": round(time.perf_counter() - start, 3),
               "computed": int(computed), "cached": int(cached), "unit": unit, "skipped": computed == 0,
               "note": note}
        if stale is not None:             # a model kept by its retrain policy: how far behind it is
            rec["stale"] = stale
        if reason is not None:            # a training stage: why it trained or kept its model (the report says)
            rec["reason"] = reason
        self.records.append(rec)
        what = (f"skipped: the store has all {cached:,} {unit}" if computed == 0 else
                f"computed {computed:,} {unit}, {cached:,} from the cache")
        self.log.info("%s %s: %s (%.1f s)%s", stage, corpus, what, rec["seconds"], f" · {note}" if note else "")
        return rec


def _labelled(fs: FeatureStore, corpus: str) -> bool:
    import pyarrow.compute as pc
    docs = fs.corpus(corpus).read(columns=["label"])
    return docs.num_rows > 0 and pc.count(docs["label"]).as_py() > 0


@flow(name="embcache-run")
def pipeline_flow(config: dict | None = None, config_path: str | None = None, store: str | None = None,
                  rescan: bool = False, retrain: bool = False) -> dict:
    """Run every stage on every corpus of the config; compute only what the store lacks.

    config: a parsed config (the shape of the TOML file); config_path: a TOML/YAML file,
    re-read at each run (so a schedule picks up edits); neither: the embedded default.
    store overrides the config's store. rescan: read every source file (IngestConfig.rescan);
    retrain: train every training stage whose inputs changed, whatever its retrain policy.
    """
    log = get_run_logger()
    cfg = load_config(config_path if config_path else config)
    if rescan:
        cfg = replace(cfg, ingest=replace(cfg.ingest, rescan=True))
    from .unchanged import unchanged_record      # a scheduled run that finds nothing changed: no subflows
    quick = None if rescan or retrain else unchanged_record(cfg, store or cfg.store)
    if quick is not None:
        log.info("run %s: %s", quick["run_id"], quick["stages"][0]["note"] if quick["stages"] else "nothing changed")
        return quick
    root = store or cfg.store
    fs = FeatureStore(root)
    started, t_run = datetime.now(timezone.utc), time.perf_counter()
    run_id = run_record.new_run_id(started)
    stages, summary = _Stages(log), {}
    record = {"run_id": run_id,
              "flow_run_id": _flow_run_id(), "started": started.isoformat(), "store": root,
              "config": config_to_dict(cfg), "stages": stages.records, "summary": summary, "status": "failed"}
    try:
        with _subflows_without_heartbeats():
            for corpus in cfg.corpus_list():
                summary[corpus.name] = _corpus_stages(cfg, root, fs, corpus, stages, retrain)
                _compact(fs, corpus.name, stages)
        record["status"] = "completed"
    finally:
        _save_record(fs, record, t_run)
    if cfg.report:                 # renders the saved record; then the record learns where the report is
        from .report_flows import report_task
        t = time.perf_counter()
        record["report"] = report_task(root, run_id, [c.name for c in cfg.corpus_list()])
        stages.add("report", "*", t, 1, 0, "reports")
        _save_record(fs, record, t_run)
    if record["status"] == "completed":       # what the next run compares with (flows/unchanged.py)
        from .unchanged import state_of
        record["state"] = state_of(cfg, root)
        _save_record(fs, record, t_run)
    log.info("run %s done in %.1f s: %s", run_id, record["wall_seconds"], json.dumps(_rounded(summary)))
    return record


def _rounded(value, digits: int = 4):
    """`value` with every float rounded, for lines people read (the record keeps full precision)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value


def _subflows_without_heartbeats():
    """Settings for the stage subflows: no heartbeat thread of their own.

    Subflows run in this flow's process and thread, so this flow's heartbeat already tells
    the server that the process is alive. Prefect 3.8 gives every flow run a heartbeat
    thread that sleeps in 1 s steps and is joined when the run ends: ~1 s per subflow,
    8 s of a run that has nothing to compute (benchmarks/end_to_end.py).
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _corpus_stages(cfg: RunConfig, root: str, fs: FeatureStore, corpus: CorpusConfig, stages: _Stages,
                   retrain: bool = False) -> dict:
    """Every enabled stage on one corpus, in order; its line of the run summary.

    The featurize stages compute row by row what the store lacks; then each training stage
    of TRAINING_STAGES (flows/training_stages.py) runs, or keeps its stored result (`_train`)."""
    from .featurize_flows import featurize_bert_flow, ingest_flow

    name = corpus.name
    t = time.perf_counter()
    ing = ingest_flow(name, list(corpus.sources), cfg.ingest, store=root)
    rec = stages.add("ingest", name, t, ing.new_texts, ing.documents - ing.new_texts, "texts",
                     f"snapshot {ing.snapshot}, {ing.rejected_total} rejected"
                     + (f"; encoding auto: {describe(ing.encodings)}" if ing.encodings else ""))
    rec["sources"] = ing.changes()                # files added, edited, removed, ...
    s = {"snapshot": ing.snapshot, "documents": ing.documents, "rejected": ing.rejected_total,
         "head_accuracy": None,
         "static_accuracy": None, "wordsim353": None, "analogy_accuracy": None}
    run = CorpusRun(cfg, root, fs, name, fs.corpus(name).snapshot().sha256, retrain)

    t = time.perf_counter()
    feats = runners.on(featurize_bert_flow)(name, cfg.model, cfg.tokenize, cfg.encode, store=root)
    rec = stages.add("featurize-bert", name, t, feats.encode.computed, feats.encode.cached, "texts",
                     f"bert_features@{feats.features_fingerprint[:12]}")
    rec["encoder"] = feats.encoder             # device, precision, backend (auto: what was measured)
    run.results["featurize-bert"] = feats
    if cfg.word2vec.enabled:
        run.results["featurize-word2vec"] = _featurize_word2vec(cfg, root, name, stages)
    labelled = None
    for stage in TRAINING_STAGES:
        if not stage.enabled(run):
            continue
        if stage.needs_labels:
            labelled = _labelled(fs, name) if labelled is None else labelled
            if not labelled:                  # heads and classifiers need labels
                continue
        run.results[stage.name] = r = _train(stage, run, stages)
        s.update(stage.summary(r))
    return s


def _train(stage: TrainingStage, run: CorpusRun, stages: _Stages) -> dict:
    """A training stage's result: the stored one when its identity is unchanged or its retrain
    policy keeps it (stages/retrain.py), else trained now."""
    fs, corpus, name, t = run.fs, run.corpus, stage.ledger_name(run.cfg), time.perf_counter()
    identity = stage.identity(run, run.snapshot_sha)
    r = ledger.recall(fs, stage.name, corpus, name, identity, stage.model_kind)
    if r is not None and stage.current(run, r):
        stored = "inputs and config unchanged: stored result"
        stages.add(stage.name, corpus, t, 0, 1, stage.unit,
                   f"{stage.describe(r)}: {stored}" if stage.describe(r) else stored,
                   reason="inputs and config unchanged")
        return r
    why, reason, basis = "", "its inputs changed", None
    policy = stage.policy(run.cfg)
    if policy is not None:
        basis = stage.identity(run, "")          # what it reads apart from the corpus snapshot
        d = retrain.decide(fs, stage.name, corpus, name, basis, policy.retrain, policy.retrain_threshold,
                           run.force, stage.model_kind)
        if not d.train and stage.current(run, d.previous):
            stages.add(stage.name, corpus, t, 0, 1, stage.unit,
                       f"{stage.describe(d.previous) or 'stored result'} kept: {d.reason}", d.stale.as_dict(),
                       reason=d.reason)
            return d.previous
        why, reason = f" ({d.reason})", d.reason
    trained = stage.train(run)
    r = {k: v for k, v in trained.result.items() if k not in ("history", "markdown")}   # bulky: kept with the model
    ledger.remember(fs, stage.name, corpus, name, identity, r, basis, fs.corpus(corpus).snapshot().id)
    if trained.reused:
        stages.add(stage.name, corpus, t, 0, 1, stage.unit, stage.describe(r), reason=stage.reused_reason)
    else:
        stages.add(stage.name, corpus, t, 1, 0, stage.unit, stage.note(run, r) + why, reason=reason)
    return r


def _save_record(fs: FeatureStore, record: dict, t_run: float) -> None:
    record["finished"] = datetime.now(timezone.utc).isoformat()
    record["wall_seconds"] = round(time.perf_counter() - t_run, 3)
    counted = [r for r in record["stages"] if r["unit"] in ("texts", "documents")]
    record["rows_cached"] = sum(r["cached"] for r in counted)
    record["rows_computed"] = sum(r["computed"] for r in counted)
    run_record.save(fs, record)


def _featurize_word2vec(cfg: RunConfig, root: str, name: str, stages: _Stages) -> dict:
    """featurize-word2vec: the vocabulary and the examples the store lacks (row by row)."""
    from .word2vec_flows import featurize_word2vec_flow
    w, t = cfg.word2vec, time.perf_counter()
    ex = runners.on(featurize_word2vec_flow)(name, cfg.words, cfg.skipgram, w.epochs_of_examples, w.seed,
                                             extend=w.vocabulary == "extend", store=root,
                                             keep_vocabulary=w.vocabulary == "keep")
    stages.add("featurize-word2vec", name, t, ex["computed"], ex["cached"], "texts",
               f"w2v_examples@{ex['examples_fingerprint'][:12]}")
    return ex


def _compact(fs: FeatureStore, corpus: str, stages: _Stages) -> None:
    """Merge the small shards of the corpus's tables once they pile up (storage/compact.py)."""
    from ..storage.compact import maybe_compact
    t, merged, notes = time.perf_counter(), 0, []
    for name, fps in fs.corpus(corpus).manifest().links.items():
        try:
            r = maybe_compact(fs.open(name, fps[-1]))
        except NotFound:                   # a linked table removed by hand: nothing to compact
            continue
        if r is not None and r.merged:
            merged += r.merged
            notes.append(f"{name} {r.before:,} -> {r.after:,} shards")
    if merged:                             # recorded when it merged something
        stages.add("compact", corpus, t, merged, 0, "shards", "; ".join(notes))


def _flow_run_id() -> str | None:
    from prefect.context import get_run_context
    try:
        return str(get_run_context().flow_run.id)
    except Exception:                      # noqa: BLE001 - outside a flow run there is no id to record
        return None
