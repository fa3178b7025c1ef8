"""`embcache evaluate head|word2vec` and `embcache compare`: how good the trained models are."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import typer

from ..flows.run_config import CompareSection, HeadSection, RunConfig, StaticSection
from ..pipeline.configs import TokenizeConfig
from .app import app, corpus_store, evaluate_app, out, prefect_api, store_of
from .options import argument, option
from .progress import progress_bars

CompareFormat = Literal["auto", "table", "markdown"]   # compare's output (its --json aside)


@evaluate_app.command("head")
def evaluate_head(ctx: typer.Context,
                  name: str = argument(HeadSection, "name", help="A saved head."),
                  corpus: str = typer.Option(None, help="Labelled corpus (default: the head's own, test split)."),
                  as_json: bool = typer.Option(False, "--json")):
    """Accuracy, macro-F1, per-class precision/recall and the confusion matrix of a saved head.

    On another labelled corpus, its documents are featurized first with the head's own
    settings (only what the store lacks).

    Example: `embcache evaluate head topics --corpus bbc_2026`
    """
    store = store_of(ctx) if corpus is None else corpus_store(ctx, corpus)
    store.models.require("head", name)
    with prefect_api("train_flows"), progress_bars():
        from ..flows.train_flows import evaluate_head_flow
        r = evaluate_head_flow(name, corpus, store=store.root)
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


@evaluate_app.command("word2vec")
def evaluate_word2vec(ctx: typer.Context,
                      pairs: list[Path] = typer.Option(None, "--pairs", help="Word-pair similarity files "
                                                                           "(WordSim353 format); default: WordSim353."),
                      analogies: Path = typer.Option(None, help="Analogy file (questions-words format)."),
                      restrict_vocab: int = typer.Option(30000, help="Only the most frequent words count."),
                      fingerprint: str = typer.Option(None, help="word_vectors fingerprint (default: current)."),
                      as_json: bool = typer.Option(False, "--json")):
    """Spearman on word-pair files, analogy accuracy and OOV ratio (gensim's evaluation functions).

    Example: `embcache evaluate word2vec --pairs my_pairs.tsv --analogies questions-words.txt`
    """
    from ..stages.word2vec_eval import evaluate, keyed_vectors
    r = evaluate(keyed_vectors(store_of(ctx), fingerprint), [str(p) for p in pairs] if pairs else None,
                 str(analogies) if analogies else None, restrict_vocab)
    if as_json:
        print(json.dumps(r))
        return
    for name, m in r["pairs"].items():
        if m["spearman"] is None:
            out.print(f"{name}: {m['note']}")
        else:
            out.print(f"{name}: Spearman {m['spearman']:.3f}, Pearson {m['pearson']:.3f}, OOV {m['oov_ratio']:.1%}")
    a = r["analogies"]
    out.print(f"{a['file']}: " + (f"accuracy {a['accuracy']:.1%} on {a['questions']:,} in-vocabulary questions"
                                  if a["questions"] else "no question has all four words in the vocabulary"))


@app.command()
def compare(ctx: typer.Context,
            corpus: str = typer.Argument(..., help="A labelled corpus."),
            vectors: str = option(StaticSection, "vectors", help="Static vectors for the static rows."),
            trainable: list[str] = option(CompareSection, "trainable",
                                          help="Static variants to train (repeat the option)."),
            model: str = option(RunConfig, "model", help="Encoder (default: the packaged MiniLM)."),
            finetune: bool = option(CompareSection, "finetune", "--finetune/--no-finetune",
                                    help="Add the two fine-tuning rows (encoder backward passes: "
                                         "minutes to hours on a CPU; an estimate is printed first)."),
            unfreeze_epochs: int = option(RunConfig.finetune, "unfreeze_epochs",
                                          help="Fine-tuning: epochs end to end."),
            unfreeze_layers: int = option(RunConfig.finetune, "unfreeze_layers",
                                          help="Fine-tuning: top K layers that train."),
            max_length: int = option(TokenizeConfig, "max_length", help="Tokens per document for the encoder."),
            split_seed: int = option(HeadSection, "split_seed"),
            fmt: CompareFormat = typer.Option("auto", "--format",
                                              help="auto: a table in a terminal, Markdown when piped."),
            device: str = option(RunConfig.finetune, "device",
                                 help="Fine-tuning rows: auto (CUDA when torch sees a GPU, else cpu), cpu, "
                                      "cuda, cuda:N, mps."),
            as_json: bool = typer.Option(False, "--json")):
    """Linear head vs static vectors vs fine-tuning on one split: accuracy, macro-F1, time, cost.

    Writes reports/compare-CORPUS.md and .json into the store. Prints a table in a terminal,
    Markdown when piped (`embcache compare bbc > compare.md`) or with --format markdown.

    Example: `embcache compare bbc --trainable oov --trainable none`  ·  `embcache compare bbc --finetune`
    """
    config = dataclasses.replace(RunConfig.finetune, unfreeze_epochs=unfreeze_epochs,
                                 unfreeze_layers=unfreeze_layers, device=device) if finetune else None
    if finetune:
        from ..pipeline.devices import resolve_device
        resolve_device(device)                 # no such device: one line naming what to install (exit 2)
    store = corpus_store(ctx, corpus)
    with prefect_api("train_flows"), progress_bars():
        from ..flows.train_flows import compare_flow
        r = compare_flow(corpus, vectors, tuple(map(str, trainable)), config, model, max_length, split_seed,
                         store=store.root)
    if as_json:
        print(json.dumps(r))
        return
    if fmt == "markdown" or (fmt == "auto" and not out.is_terminal):
        out.print(r["markdown"], highlight=False, soft_wrap=True, markup=False)
        return
    from rich.table import Table
    from rich.text import Text
    from ..stages.compare import COLUMNS, NUMERIC, TRAINING_NOTE, cells, title
    table = Table(title=Text(title(r)), caption=Text(TRAINING_NOTE), show_lines=True)
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in NUMERIC else "left")
    for row in r["rows"]:
        table.add_row(*map(Text, cells(row)))
    out.print(table)
