"""Training-stage commands: train head, train static, finetune, evaluate head, predict, compare."""

from __future__ import annotations

import json
from enum import Enum

import typer

from ..flows.errors import FlowError
from ..pipeline.errors import PipelineError
from ..storage import StoreError

from .app import app, fail, out, runs_flows, store_of
from .pipeline_cmds import progress_bars
from .word2vec import evaluate_app, train_app


class ClassWeights(str, Enum):
    none = "none"
    balanced = "balanced"


class Optimizer(str, Enum):
    lbfgs = "lbfgs"
    adam = "adam"


class Trainable(str, Enum):
    oov = "oov"
    special = "special"
    all = "all"
    none = "none"


class Encoder(str, Enum):
    mean = "mean"
    cnn = "cnn"


def print_metrics(r: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(r, default=str))
        return
    for part, m in r.get("metrics", {}).items():
        out.print(f"{part}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
                  f"({sum(v['support'] for v in m['per_class'].values()):,} documents)")


@train_app.command("head")
@runs_flows("train_flows")
def train_head(ctx: typer.Context,
               corpus: str = typer.Argument(..., help="A labelled corpus with cached bert_features."),
               name: str = typer.Option("head", help="Name the head is saved under (models/head/NAME)."),
               hidden: int = typer.Option(0, help="0: Linear(H, C); >0: one hidden ReLU layer of this size."),
               optimizer: Optimizer = typer.Option(Optimizer.lbfgs, help="lbfgs: full-batch L-BFGS on "
                                                   "LogisticRegression's objective; adam: mini-batches (for dropout)."),
               dropout: float = typer.Option(0.0, help="Dropout on the features (needs --optimizer adam)."),
               lr: float = typer.Option(3e-3, help="Learning rate (optimizer adam only; L-BFGS picks its steps)."),
               weight_decay: float = typer.Option(1.0, help="L2 strength, 1/C of sklearn's LogisticRegression."),
               epochs: int = typer.Option(100, help="Most epochs (early stopping on validation loss)."),
               patience: int = typer.Option(5, help="Epochs without a better validation loss before stopping."),
               batch_size: int = typer.Option(512, help="Rows per step."),
               class_weights: ClassWeights = typer.Option(ClassWeights.none, help="balanced: weight classes "
                                                                                  "by inverse frequency."),
               seed: int = typer.Option(0, help="Seed of the head (init, shuffling)."),
               split_seed: int = typer.Option(0, help="Seed of the 80/10/10 split when the corpus has no split column."),
               as_json: bool = typer.Option(False, "--json")):
    """A linear head on the corpus's cached BERT features: metrics, a saved head, a predictions table.

    Example: `embcache train head bbc --name topics --class-weights balanced`
    """
    from ..pipeline.heads import HeadConfig
    from ..flows.train_flows import train_head_flow
    try:
        config = HeadConfig(hidden=hidden, dropout=dropout, optimizer=optimizer.value, lr=lr,
                            weight_decay=weight_decay, max_epochs=epochs, patience=patience,
                            batch_size=batch_size, class_weights=class_weights.value, seed=seed)
        r = train_head_flow(corpus, name, config, split_seed, store=store_of(ctx).root)
    except (StoreError, PipelineError, FlowError) as e:
        raise fail(e)
    if not as_json:
        out.print(f"head {name}@{r['version'][:12]} on bert_features@{r['feature_fingerprint'][:12]}: "
                  f"{r['documents']:,} documents, best epoch {r['history']['best_epoch'] + 1}, "
                  f"{r['train_seconds']:.2f} s training")
    print_metrics(r, as_json)


@evaluate_app.command("head")
@runs_flows("train_flows")
def evaluate_head(ctx: typer.Context,
                  name: str = typer.Argument("head", help="A saved head."),
                  corpus: str = typer.Option(None, help="Labelled corpus (default: the head's own, test split)."),
                  as_json: bool = typer.Option(False, "--json")):
    """Accuracy, macro-F1, per-class precision/recall and the confusion matrix of a saved head.

    Example: `embcache evaluate head topics --corpus bbc_2026`
    """
    from ..flows.train_flows import evaluate_head_flow
    try:
        r = evaluate_head_flow(name, corpus, store=store_of(ctx).root)
    except (StoreError, PipelineError, FlowError) as e:
        raise fail(e)
    if as_json:
        print(json.dumps(r))
        return
    m = r["metrics"]
    out.print(f"head {name} on {r['corpus']} ({r['rows']}, {r['documents']:,} documents): "
              f"accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}")
    for label, v in m["per_class"].items():
        out.print(f"  {label:>16}: precision {v['precision']:.3f} recall {v['recall']:.3f} "
                  f"F1 {v['f1']:.3f} ({v['support']})")
    out.print("confusion matrix (rows: true " + ", ".join(m["labels"]) + "):")
    for label, row in zip(m["labels"], m["confusion_matrix"]):
        out.print(f"  {label:>16}: " + " ".join(f"{v:5d}" for v in row))


@app.command()
@runs_flows("train_flows")
def predict(ctx: typer.Context,
            corpus: str = typer.Argument(..., help="An ingested corpus (labels not needed)."),
            head: str = typer.Option("head", "--head", help="A saved head."),
            as_json: bool = typer.Option(False, "--json")):
    """Predict labels with a saved head; encodes only documents whose features are not cached.

    Example: `embcache ingest inbox ./new-docs && embcache predict inbox --head topics`
    """
    from ..flows.train_flows import predict_flow
    try:
        with progress_bars():
            r = predict_flow(corpus, head, store=store_of(ctx).root)
    except (StoreError, PipelineError, FlowError) as e:
        raise fail(e)
    if as_json:
        print(json.dumps(r))
        return
    out.print(f"{r['documents']:,} documents: {r['encoded']:,} encoded now, {r['cached']:,} from the cache; "
              f"predictions@{r['predictions'][:12]}")
    out.print(", ".join(f"{k}: {v:,}" for k, v in sorted(r["label_counts"].items())))


@train_app.command("static")
@runs_flows("train_flows")
def train_static(ctx: typer.Context,
                 corpus: str = typer.Argument(..., help="A labelled corpus."),
                 vectors: str = typer.Option("glove-6b-50d", help="A vectors file, glove-6b-50d (packaged), or "
                                                                  "word2vec:CORPUS (embcache's own word_vectors)."),
                 vectors_format: str = typer.Option("auto", help="auto | glove | word2vec | word2vec-binary | fasttext"),
                 trainable: Trainable = typer.Option(Trainable.oov, help="Rows that train; the rest stay frozen."),
                 special_token: list[str] = typer.Option(None, "--special-token", help="Declared special tokens "
                                                                                      "(own rows; train with "
                                                                                      "--trainable special)."),
                 encoder: Encoder = typer.Option(Encoder.mean, help="mean pooling + linear, or a 1-D CNN."),
                 name: str = typer.Option("static", help="Name the classifier is saved under."),
                 epochs: int = typer.Option(20, help="Most epochs (early stopping on validation loss)."),
                 lr: float = typer.Option(3e-3, help="AdamW learning rate."),
                 batch_size: int = typer.Option(32, help="Documents per step."),
                 max_tokens: int = typer.Option(256, help="Words kept per document."),
                 seed: int = typer.Option(0),
                 split_seed: int = typer.Option(0, help="Seed of the split when the corpus has no split column."),
                 as_json: bool = typer.Option(False, "--json")):
    """A classifier on pretrained static vectors where only the chosen rows train.

    Example: `embcache train static bbc --vectors glove-6b-50d --trainable oov --special-token "<num>"`
    """
    from ..pipeline.static import StaticConfig
    from ..flows.train_flows import train_static_flow
    try:
        config = StaticConfig(trainable=trainable.value, encoder=encoder.value,
                              specials=tuple(special_token or ()), epochs=epochs, lr=lr,
                              batch_size=batch_size, max_tokens=max_tokens, seed=seed)
        r = train_static_flow(corpus, name, vectors, config, vectors_format=vectors_format,
                              split_seed=split_seed, store=store_of(ctx).root)
    except (StoreError, PipelineError, FlowError, OSError) as e:
        raise fail(e)
    if not as_json:
        out.print(f"static {name}@{r['version'][:12]}: {r['rows']:,} rows ({r['pretrained_rows']:,} pretrained, "
                  f"{r['trainable_rows']:,} trainable), best epoch {r['history']['best_epoch'] + 1}, "
                  f"{r['train_seconds']:.1f} s training")
    print_metrics(r, as_json)


@app.command()
@runs_flows("train_flows")
def finetune(ctx: typer.Context,
             corpus: str = typer.Argument(..., help="A labelled corpus."),
             name: str = typer.Option("finetuned", help="Name the model is saved under (models/finetune/NAME)."),
             model: str = typer.Option(None, help="HF id or local path (default: the packaged MiniLM)."),
             freeze_epochs: int = typer.Option(3, help="Phase 1: epochs of the head on cached pooler vectors."),
             unfreeze_epochs: int = typer.Option(2, help="Phase 2: epochs end to end from cached token ids."),
             unfreeze_layers: int = typer.Option(None, help="Top K encoder layers to train in phase 2 (default all)."),
             lr: float = typer.Option(3e-5, help="Phase 2 AdamW learning rate."),
             head_lr: float = typer.Option(1e-3, help="Phase 1 learning rate."),
             batch_size: int = typer.Option(32, help="Phase 2 documents per step."),
             max_length: int = typer.Option(256, help="Tokens per document."),
             checkpoint_every: int = typer.Option(0, help="Steps between checkpoints (0: at each epoch end)."),
             fresh: bool = typer.Option(False, "--fresh", help="Ignore a checkpoint of the same run."),
             seed: int = typer.Option(0),
             split_seed: int = typer.Option(0),
             as_json: bool = typer.Option(False, "--json")):
    """Fine-tune the encoder: phase 1 trains the head on cached features, phase 2 unfreezes.

    Resumes from the last checkpoint of the same run (same model, data, split and settings).

    Example: `embcache finetune bbc --freeze-epochs 3 --unfreeze-epochs 1 --unfreeze-layers 2`
    """
    from ..pipeline.finetune import FinetuneConfig
    from ..flows.train_flows import finetune_flow
    try:
        config = FinetuneConfig(freeze_epochs=freeze_epochs, unfreeze_epochs=unfreeze_epochs,
                                unfreeze_layers=unfreeze_layers, lr=lr, head_lr=head_lr, batch_size=batch_size,
                                checkpoint_every=checkpoint_every, seed=seed)
        with progress_bars():
            r = finetune_flow(corpus, name, model, max_length, config, split_seed, not fresh,
                              store=store_of(ctx).root)
    except (StoreError, PipelineError, FlowError) as e:
        raise fail(e)
    if not as_json:
        p1 = r["phase1_metrics"].get("test", {}).get("accuracy")
        out.print(f"finetune {name}@{r['version'][:12]}: phase 1 {r['phase1_seconds']:.1f} s"
                  + (f" (test accuracy {p1:.4f})" if p1 is not None else " (resumed: skipped)")
                  + f", phase 2 {r['phase2_seconds']:.1f} s")
    print_metrics(r, as_json)


@app.command()
@runs_flows("train_flows")
def compare(ctx: typer.Context,
            corpus: str = typer.Argument(..., help="A labelled corpus."),
            vectors: str = typer.Option("glove-6b-50d", help="Static vectors for the static rows."),
            trainable: list[Trainable] = typer.Option([Trainable.oov, Trainable.none, Trainable.all],
                                                      help="Static variants to train (repeat the option)."),
            model: str = typer.Option(None, help="Encoder (default: the packaged MiniLM)."),
            unfreeze_epochs: int = typer.Option(1, help="Fine-tuning: epochs end to end."),
            unfreeze_layers: int = typer.Option(2, help="Fine-tuning: top K layers that train."),
            max_length: int = typer.Option(256, help="Tokens per document for the encoder."),
            split_seed: int = typer.Option(0),
            as_json: bool = typer.Option(False, "--json")):
    """Linear head vs static vectors vs fine-tuning on one split: accuracy, macro-F1, time, cost.

    Writes reports/compare-CORPUS.md and .json into the store.

    Example: `embcache compare bbc --trainable oov --trainable none`
    """
    from ..pipeline.finetune import FinetuneConfig
    from ..flows.train_flows import compare_flow
    try:
        with progress_bars():
            r = compare_flow(corpus, vectors, tuple(t.value for t in trainable),
                             FinetuneConfig(freeze_epochs=3, unfreeze_epochs=unfreeze_epochs,
                                            unfreeze_layers=unfreeze_layers),
                             model, max_length, split_seed, store=store_of(ctx).root)
    except (StoreError, PipelineError, FlowError, OSError) as e:
        raise fail(e)
    if as_json:
        print(json.dumps(r))
        return
    out.print(r["markdown"], highlight=False, soft_wrap=True)
