"""The end-to-end run's training stages, each declared once: identity, retrain basis, run.

A training stage (a Kedro node, as the run sees it) is trained again only when something it
reads changed. It declares:
- `identity(run, snapshot)`: sha256 of what it reads and how (the fingerprints of its
  input tables, its configs, its code's version) with the corpus snapshot's checksum. The
  same recipe with `snapshot=""` is its retrain basis: what it reads apart from the corpus,
  which its retrain policy (stages/retrain.py) compares to decide whether a changed corpus
  alone calls for training again;
- `section(cfg)`: its run-config section: whether it runs, its model's name, its retrain
  policy (`RetrainSwitches`; a section without one trains on every change);
- `train(run)`: the flow that trains it, and what its result adds to the corpus's summary.
`TRAINING_STAGES` lists them in the order they run; flows/run.py runs the list, and the run
ledger (stages/ledger.py) keeps each stage's last identity and result. Adding a training
stage: its stage and flow files, a class here, and a line in TRAINING_STAGES.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from ..stages import compare, heads, static, word2vec_eval
from ..stages.stage import hashed
from ..storage import FeatureStore, fingerprint_of
from .run_config import RetrainSwitches, RunConfig


@dataclass
class CorpusRun:
    """What the stages of one corpus share during a run: its settings and earlier results."""
    cfg: RunConfig
    root: str
    fs: FeatureStore
    corpus: str
    snapshot_sha: str                         # the current snapshot's checksum
    force: bool = False                       # --retrain: train whatever the policy says
    results: dict[str, object] = field(default_factory=dict)   # stage name -> its result, as the run goes

    @property
    def features_fingerprint(self) -> str:
        return self.results["featurize-bert"].features_fingerprint


@dataclass(frozen=True)
class Trained:
    """A stage's training: its result, and whether the model existed already (linked again)."""
    result: dict
    reused: bool = False


class TrainingStage(Protocol):
    name: ClassVar[str]                 # its name in the ledger and the run record
    model_kind: ClassVar[str | None]    # the saved model the ledger checks is still current (None: none)
    unit: ClassVar[str]                 # what the run record counts: "models", "evaluations"
    needs_labels: ClassVar[bool]        # skipped for an unlabelled corpus
    reused_reason: ClassVar[str]        # why a model that existed already was linked again

    def section(self, cfg: RunConfig): ...
    def enabled(self, run: CorpusRun) -> bool: ...
    def ledger_name(self, cfg: RunConfig) -> str: ...
    def identity(self, run: CorpusRun, snapshot: str) -> str: ...
    def current(self, run: CorpusRun, result: dict) -> bool: ...
    def train(self, run: CorpusRun) -> Trained: ...
    def describe(self, result: dict) -> str: ...
    def note(self, run: CorpusRun, result: dict) -> str: ...
    def summary(self, result: dict) -> dict: ...


class _Base:
    """What most training stages share: a model kind, a policy from their section, no extras."""
    model_kind: ClassVar[str | None] = None
    unit: ClassVar[str] = "models"
    needs_labels: ClassVar[bool] = True
    reused_reason: ClassVar[str] = "trained before: linked again"

    def enabled(self, run: CorpusRun) -> bool:
        return self.section(run.cfg).enabled

    def ledger_name(self, cfg: RunConfig) -> str:
        return self.section(cfg).name

    def policy(self, cfg: RunConfig) -> RetrainSwitches | None:
        s = self.section(cfg)
        return s if isinstance(s, RetrainSwitches) else None

    def current(self, run: CorpusRun, result: dict) -> bool:
        return True

    def describe(self, result: dict) -> str:
        return ""

    def summary(self, result: dict) -> dict:
        return {}


class TrainWord2Vec(_Base):
    """Skip-gram on the cached examples (featurize-word2vec ran before it); its vectors are the
    table the corpus links, so a stored result counts only while that link still names it."""
    name = "train-word2vec"
    needs_labels = False
    reused_reason = "these vectors were trained before: linked again"

    def section(self, cfg):
        return cfg.word2vec

    def ledger_name(self, cfg):
        return "default"

    def identity(self, run, snapshot):
        basis = fingerprint_of({"w2v_examples": run.results["featurize-word2vec"]["examples_fingerprint"],
                                "sgns": hashed(run.cfg.sgns), "seed": run.cfg.word2vec.seed})
        return fingerprint_of({"basis": basis, "snapshot": snapshot}) if snapshot else basis

    def current(self, run, result):
        return run.fs.corpus(run.corpus).manifest().links.get("word_vectors", [])[-1:] == [result["fingerprint"]]

    def train(self, run):
        from .word2vec_flows import train_word2vec_flow
        before = set(run.fs.fingerprints("word_vectors"))
        r = train_word2vec_flow(run.corpus, run.cfg.sgns, run.cfg.word2vec.seed, store=run.root)
        return Trained(r, reused=r["fingerprint"] in before)     # the flow re-links a trained table

    def describe(self, result):
        return f"word_vectors@{result['fingerprint'][:12]}"

    def note(self, run, result):
        return f"{self.describe(result)}, {result['pairs_per_s']:,.0f} pairs/s"


class EvaluateWord2Vec(_Base):
    """WordSim353, SimLex-999 and the analogies on the trained vectors (gensim's files)."""
    name = word2vec_eval.EVALUATE.name
    unit = "evaluations"
    needs_labels = False

    def section(self, cfg):
        return cfg.word2vec

    def enabled(self, run):
        return run.cfg.word2vec.enabled and run.cfg.word2vec.evaluate

    def ledger_name(self, cfg):
        return "default"

    def policy(self, cfg):
        return None                           # evaluated whenever the vectors change

    def identity(self, run, snapshot):
        return word2vec_eval.identity(run.results["train-word2vec"]["fingerprint"])

    def train(self, run):
        vectors = word2vec_eval.keyed_vectors(run.fs, run.results["train-word2vec"]["fingerprint"])
        return Trained(word2vec_eval.evaluate(vectors))

    def note(self, run, result):
        return ""

    def summary(self, result):
        return {"wordsim353": result["pairs"].get("wordsim353.tsv", {}).get("spearman"),
                "analogy_accuracy": result["analogies"].get("accuracy")}


class TrainHead(_Base):
    """A linear head on the cached BERT features."""
    name = "train-head"
    model_kind = heads.HEAD_KIND

    def section(self, cfg):
        return cfg.head_section

    def identity(self, run, snapshot):
        return heads.identity(run.features_fingerprint, snapshot, run.cfg.head, run.cfg.head_section.split_seed)

    def train(self, run):
        from .train_flows import train_head_flow
        h = run.cfg.head_section
        return Trained(train_head_flow(run.corpus, h.name, run.cfg.head, h.split_seed, store=run.root))

    def note(self, run, result):
        return f"{result['train_seconds']:.2f} s training"

    def summary(self, result):
        return {"head_accuracy": result["metrics"].get("test", {}).get("accuracy")}


class TrainStatic(_Base):
    """A classifier on static vectors where only chosen rows train."""
    name = "train-static"
    model_kind = "static"

    def section(self, cfg):
        return cfg.static_section

    def identity(self, run, snapshot):
        st = run.cfg.static_section
        return static.identity(run.fs.resolve_linked(run.corpus, "documents"), snapshot, st.vectors,
                               st.vectors_format, run.cfg.static, st.split_seed)

    def train(self, run):
        from .train_flows import train_static_flow
        st = run.cfg.static_section
        return Trained(train_static_flow(run.corpus, st.name, st.vectors, run.cfg.static,
                                         vectors_format=st.vectors_format, split_seed=st.split_seed,
                                         store=run.root))

    def note(self, run, result):
        return f"{result['train_seconds']:.1f} s training"

    def summary(self, result):
        return {"static_accuracy": result["metrics"].get("test", {}).get("accuracy")}


class Compare(_Base):
    """The comparison table of the three ways to put embeddings into a classifier."""
    name = "compare"

    def section(self, cfg):
        return cfg.compare

    def ledger_name(self, cfg):
        return "compare"

    def identity(self, run, snapshot):
        c, cfg = run.cfg.compare, run.cfg
        return compare.identity(run.features_fingerprint, snapshot, static.vectors_identity(cfg.static_section.vectors),
                                c.trainable, cfg.finetune if c.finetune else None, cfg.model,
                                cfg.tokenize.max_length)

    def train(self, run):
        from .train_flows import compare_flow
        c, cfg = run.cfg.compare, run.cfg
        return Trained(compare_flow(run.corpus, cfg.static_section.vectors, tuple(c.trainable),
                                    cfg.finetune if c.finetune else None, cfg.model, cfg.tokenize.max_length,
                                    store=run.root))

    def note(self, run, result):
        return f"{len(result['rows'])} approaches, reports/compare-{run.corpus}.md"


# In the order the end-to-end run trains them, after each corpus's featurize stages.
TRAINING_STAGES: tuple[TrainingStage, ...] = (TrainWord2Vec(), EvaluateWord2Vec(), TrainHead(), TrainStatic(),
                                              Compare())
