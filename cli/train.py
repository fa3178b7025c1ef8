"""`embcache train head|static|word2vec` and `embcache finetune`: models from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..flows.run_config import HeadSection, RunConfig, StaticSection, Word2VecSection
from ..pipeline.configs import FinetuneConfig, HeadConfig, SGNSConfig, StaticConfig, TokenizeConfig
from .app import app, corpus_store, out, prefect_api, train_app
from .options import option
from .progress import progress_bars


def print_metrics(r: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(r, default=str))
        return
    for part, m in r.get("metrics", {}).items():
        out.print(f"{part}: accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} "
                  f"({sum(v['support'] for v in m['per_class'].values()):,} documents)")


@train_app.command("head")
def train_head(ctx: typer.Context,
               corpus: str = typer.Argument(..., help="A labelled corpus with cached bert_features."),
               name: str = option(HeadSection, "name", help="Name the head is saved under (models/head/NAME)."),
               hidden: int = option(HeadConfig, "hidden",
                                    help="0: Linear(H, C); >0: one hidden ReLU layer of this size."),
               optimizer: str = option(HeadConfig, "optimizer", help="lbfgs: full-batch L-BFGS on "
                                       "LogisticRegression's objective; adam: mini-batches (for dropout)."),
               dropout: float = option(HeadConfig, "dropout", help="Dropout on the features (needs --optimizer adam)."),
               lr: float = option(HeadConfig, "lr",
                                  help="Learning rate (optimizer adam only; L-BFGS picks its steps)."),
               weight_decay: float = option(HeadConfig, "weight_decay",
                                            help="L2 strength, 1/C of sklearn's LogisticRegression."),
               epochs: int = option(HeadConfig, "max_epochs", "--epochs",
                                    help="Most epochs (early stopping on validation loss)."),
               patience: int = option(HeadConfig, "patience",
                                      help="Epochs without a better validation loss before stopping."),
               batch_size: int = option(HeadConfig, "batch_size", help="Rows per step."),
               class_weights: str = option(HeadConfig, "class_weights",
                                           help="balanced: weight classes by inverse frequency."),
               seed: int = option(HeadConfig, "seed", help="Seed of the head (init, shuffling)."),
               split_seed: int = option(HeadSection, "split_seed",
                                        help="Seed of the 80/10/10 split when the corpus has no split column."),
               as_json: bool = typer.Option(False, "--json")):
    """A linear head on the corpus's cached BERT features: metrics, a saved head, a predictions table.

    Example: `embcache train head bbc --name topics --class-weights balanced`
    """
    config = HeadConfig(hidden=hidden, dropout=dropout, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                        max_epochs=epochs, patience=patience, batch_size=batch_size,
                        class_weights=class_weights, seed=seed)
    store = corpus_store(ctx, corpus)
    with prefect_api("train_flows"):
        from ..flows.train_flows import train_head_flow
        r = train_head_flow(corpus, name, config, split_seed, store=store.root)
    if not as_json:
        out.print(f"head {name}@{r['version'][:12]} on bert_features@{r['feature_fingerprint'][:12]}: "
                  f"{r['documents']:,} documents, best epoch {r['history']['best_epoch'] + 1}", highlight=False)
        out.print(head_timing(r, config), highlight=False, soft_wrap=True)
    print_metrics(r, as_json)


def head_timing(r: dict, config: HeadConfig) -> str:
    """What a head's training took, and what the figure covers: the figure `compare` and the run
    record report (train_seconds), then the process's other costs beside it."""
    epochs, optimizer = len(r["history"]["train_loss"]), {"lbfgs": "L-BFGS"}.get(config.optimizer, config.optimizer)
    line = (f"training {r['train_seconds']:.2f} s ({epochs} {optimizer} epoch{'s' if epochs != 1 else ''}, "
            "each with its validation pass; as compare reports it)"
            f" · reading features {r['read_seconds']:.2f} s")
    if r.get("startup_seconds", 0) >= 0.05:
        line += f" · torch's one-time start-up in this process {r['startup_seconds']:.2f} s (not training)"
    return line


@train_app.command("static")
def train_static(ctx: typer.Context,
                 corpus: str = typer.Argument(..., help="A labelled corpus."),
                 vectors: str = option(StaticSection, "vectors", help="A vectors file, glove-6b-50d (packaged), or "
                                                                    "word2vec:CORPUS (embcache's own word_vectors)."),
                 vectors_format: str = option(StaticSection, "vectors_format", help="Format of the vectors file."),
                 trainable: str = option(StaticConfig, "trainable", help="Rows that train; the rest stay frozen."),
                 special_token: list[str] = option(StaticConfig, "specials", "--special-token",
                                                   help="Declared special tokens (own rows; train with "
                                                        "--trainable special)."),
                 encoder: str = option(StaticConfig, "encoder", help="mean pooling + linear, or a 1-D CNN."),
                 name: str = option(StaticSection, "name", help="Name the classifier is saved under."),
                 epochs: int = option(StaticConfig, "epochs", help="Most epochs (early stopping on validation loss)."),
                 lr: float = option(StaticConfig, "lr", help="AdamW learning rate."),
                 batch_size: int = option(StaticConfig, "batch_size", help="Documents per step."),
                 max_tokens: int = option(StaticConfig, "max_tokens", help="Words kept per document."),
                 seed: int = option(StaticConfig, "seed"),
                 split_seed: int = option(StaticSection, "split_seed",
                                          help="Seed of the split when the corpus has no split column."),
                 as_json: bool = typer.Option(False, "--json")):
    """A classifier on pretrained static vectors where only the chosen rows train.

    Example: `embcache train static bbc --vectors glove-6b-50d --trainable oov --special-token "<num>"`
    """
    config = StaticConfig(trainable=trainable, encoder=encoder, specials=tuple(special_token or ()), epochs=epochs,
                          lr=lr, batch_size=batch_size, max_tokens=max_tokens, seed=seed)
    store = corpus_store(ctx, corpus)
    with prefect_api("train_flows"):
        from ..flows.train_flows import train_static_flow
        r = train_static_flow(corpus, name, vectors, config, vectors_format=vectors_format, split_seed=split_seed,
                              store=store.root)
    if not as_json:
        out.print(f"static {name}@{r['version'][:12]}: {r['rows']:,} rows ({r['pretrained_rows']:,} pretrained, "
                  f"{r['trainable_rows']:,} trainable), best epoch {r['history']['best_epoch'] + 1}, "
                  f"{r['train_seconds']:.1f} s training")
    print_metrics(r, as_json)


@train_app.command("word2vec")
def train_word2vec(ctx: typer.Context,
                   corpus: str = typer.Argument(..., help="A corpus with cached examples."),
                   dim: int = option(SGNSConfig, "dim", help="Vector size."),
                   epochs: int = option(SGNSConfig, "epochs", help="Passes over the cached examples."),
                   lr: float = option(SGNSConfig, "lr", help="Initial SGD learning rate (decays linearly)."),
                   min_lr: float = option(SGNSConfig, "min_lr", help="Final learning rate."),
                   update: str = option(SGNSConfig, "update",
                                        help="row: one SGD step per center and all its contexts; pair: one "
                                             "per (center, context) pair, as gensim (needs --draws epoch)."),
                   batch_size: int = option(SGNSConfig, "batch_size",
                                            help="Tokens (stored draws: rows) per kernel call."),
                   seed: int = option(Word2VecSection, "seed",
                                      help="Seed of the initial vectors and of each epoch's draws."),
                   freeze_existing: bool = typer.Option(False, "--freeze-existing",
                                                        help="Start from the last vectors; train only new words."),
                   finetune_lr_scale: float = option(SGNSConfig, "other_rows_lr_scale", "--finetune-lr-scale",
                                                     help="With --freeze-existing: old rows train at "
                                                          "lr × this (0 = bit-identical).")):
    """Skip-gram with negative sampling from the cached examples; writes word_vectors and a loss PNG.

    Example: `embcache train word2vec bbc --dim 100 --epochs 5`
    """
    config = SGNSConfig(dim=dim, epochs=epochs, lr=lr, min_lr=min_lr, update=update, batch_size=batch_size)
    store = corpus_store(ctx, corpus)
    with prefect_api("word2vec_flows"):
        from ..flows.word2vec_flows import train_word2vec_flow
        r = train_word2vec_flow(corpus, config, seed, freeze_existing, finetune_lr_scale, store=store.root)
    from ..stages.word2vec_eval import loss_png
    png = None
    if store.fs.local:
        png = loss_png(r["loss_curve"], Path(store.root) / "reports" / f"word2vec-loss-{r['fingerprint'][:12]}.png")
    out.print(f"word_vectors@{r['fingerprint'][:12]}: {r['words']:,} words ({r['trained_rows']:,} trained), "
              f"{r['examples']:,} examples, {r['pairs_per_s']:,.0f} pairs/s, loss {r['loss_curve'][0]:.3f} → "
              f"{r['loss_curve'][-1]:.3f}")
    if png:
        out.print(f"loss curve: {png}", soft_wrap=True, highlight=False)


@app.command()
def finetune(ctx: typer.Context,
             corpus: str = typer.Argument(..., help="A labelled corpus."),
             name: str = typer.Option("finetuned", help="Name the model is saved under (models/finetune/NAME)."),
             model: str = option(RunConfig, "model", help="HF id or local path (default: the packaged MiniLM)."),
             freeze_epochs: int = option(FinetuneConfig, "freeze_epochs",
                                         help="Phase 1: epochs of the head on cached pooler vectors."),
             unfreeze_epochs: int = option(FinetuneConfig, "unfreeze_epochs",
                                           help="Phase 2: epochs end to end from cached token ids."),
             unfreeze_layers: int = option(FinetuneConfig, "unfreeze_layers",
                                           help="Top K encoder layers to train in phase 2 (default all)."),
             lr: float = option(FinetuneConfig, "lr", help="Phase 2 AdamW learning rate."),
             head_lr: float = option(FinetuneConfig, "head_lr", help="Phase 1 learning rate."),
             batch_size: int = option(FinetuneConfig, "batch_size", help="Phase 2 documents per step."),
             max_length: int = option(TokenizeConfig, "max_length", help="Tokens per document."),
             checkpoint_every: int = option(FinetuneConfig, "checkpoint_every",
                                            help="Steps between checkpoints (0: at each epoch end)."),
             device: str = option(FinetuneConfig, "device",
                                  help="auto (CUDA when torch sees a GPU, else cpu), cpu, cuda, cuda:N, mps."),
             fresh: bool = typer.Option(False, "--fresh", help="Ignore a checkpoint of the same run."),
             seed: int = option(FinetuneConfig, "seed"),
             split_seed: int = option(HeadSection, "split_seed"),
             as_json: bool = typer.Option(False, "--json")):
    """Fine-tune the encoder: phase 1 trains the head on cached features, phase 2 unfreezes.

    Resumes from the last checkpoint of the same run (same model, data, split and settings).

    Example: `embcache finetune bbc --freeze-epochs 3 --unfreeze-epochs 1 --unfreeze-layers 2`
    """
    config = FinetuneConfig(freeze_epochs=freeze_epochs, unfreeze_epochs=unfreeze_epochs,
                            unfreeze_layers=unfreeze_layers, lr=lr, head_lr=head_lr, batch_size=batch_size,
                            checkpoint_every=checkpoint_every, seed=seed, device=device)
    from ..pipeline.devices import resolve_device
    resolve_device(device)                     # no such device: one line naming what to install (exit 2)
    store = corpus_store(ctx, corpus)
    with prefect_api("train_flows"), progress_bars():
        from ..flows.train_flows import finetune_flow
        r = finetune_flow(corpus, name, model, max_length, config, split_seed, not fresh, store=store.root)
    if not as_json:
        p1 = r["phase1_metrics"].get("test", {}).get("accuracy")
        out.print(f"finetune {name}@{r['version'][:12]}: phase 1 {r['phase1_seconds']:.1f} s"
                  + (f" (test accuracy {p1:.4f})" if p1 is not None else " (resumed: skipped)")
                  + f", phase 2 {r['phase2_seconds']:.1f} s")
    print_metrics(r, as_json)
