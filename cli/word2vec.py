"""word2vec commands: featurize word2vec, train word2vec, evaluate word2vec, query neighbors, export vectors."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from ..flows.errors import FlowError
from ..pipeline.errors import PipelineError
from ..storage import StoreError

from .app import app, fail, out, query_app, runs_flows, store_of
from .pipeline_cmds import featurize_app, progress_bars

train_app = typer.Typer(help="Train models from the cache (never recomputing features).", no_args_is_help=True)
evaluate_app = typer.Typer(help="Evaluate trained models.", no_args_is_help=True)
export_app = typer.Typer(help="Export from the store to standard formats.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(export_app, name="export")


class SubsampleFormula(str, Enum):
    d2l = "d2l"
    gensim = "gensim"


class VectorFormat(str, Enum):
    word2vec = "word2vec"
    word2vec_binary = "word2vec-binary"
    glove = "glove"


@featurize_app.command("word2vec")
@runs_flows("word2vec_flows")
def featurize_word2vec(ctx: typer.Context,
                       corpus: str = typer.Argument(..., help="An ingested corpus."),
                       min_count: int = typer.Option(5, help="Occurrences a word needs to get an id."),
                       window: int = typer.Option(5, help="Max context window; each center draws 1..window."),
                       negatives: int = typer.Option(5, help="Noise words per context word (∝ count^0.75)."),
                       subsample: float = typer.Option(1e-4, help="t in keep = min(1, sqrt(t/f)); 0 turns it off."),
                       subsample_formula: SubsampleFormula = typer.Option(
                           SubsampleFormula.d2l, help="d2l: min(1, sqrt(t/f)); gensim: word2vec.c's softer "
                                                      "(sqrt(f/t)+1)·t/f, which keeps more words."),
                       epochs_of_examples: int = typer.Option(1, help="Independently sampled copies of the examples."),
                       seed: int = typer.Option(0, help="Seed (with the fingerprint and shard) of the sampling."),
                       extend: bool = typer.Option(False, "--extend", help="Grow the corpus's last vocabulary "
                                                                           "(existing ids never move).")):
    """Build the vocabulary and precompute skip-gram examples into w2v_examples (only missing documents).

    Example: `embcache featurize word2vec bbc --window 5 --negatives 5 --epochs-of-examples 2`
    """
    from ..pipeline.skipgram import SkipGramConfig
    from ..pipeline.words import WordConfig
    from ..flows import runners
    from ..flows.word2vec_flows import featurize_word2vec_flow
    try:
        with progress_bars(), runners.session(ctx.obj["runner"]):
            r = runners.on(featurize_word2vec_flow)(corpus, WordConfig(min_count=min_count),
                                        SkipGramConfig(subsample=subsample or None, max_window=window,
                                                       negatives=negatives,
                                                       subsample_formula=subsample_formula.value),
                                        epochs_of_examples, seed, extend, store=store_of(ctx).root)
    except (StoreError, PipelineError, FlowError) as e:
        raise fail(e)
    v = r["vocab"]
    out.print(f"vocabulary v{v['version']}: {v['words']:,} words ({v['added_words']:,} new); examples for "
              f"{r['computed']:,} documents ({r['cached']:,} cached): {r['rows']:,} rows")
    out.print(f"w2v_examples@{r['examples_fingerprint'][:12]}")


@train_app.command("word2vec")
@runs_flows("word2vec_flows")
def train_word2vec(ctx: typer.Context,
                   corpus: str = typer.Argument(..., help="A corpus with cached examples."),
                   dim: int = typer.Option(100, help="Vector size."),
                   epochs: int = typer.Option(5, help="Passes over the cached examples."),
                   lr: float = typer.Option(0.025, help="Initial SGD learning rate (decays linearly)."),
                   batch_size: int = typer.Option(10_000, help="Rows per kernel call."),
                   seed: int = typer.Option(0, help="Seed of the initial vectors."),
                   freeze_existing: bool = typer.Option(False, "--freeze-existing",
                                                        help="Start from the last vectors; train only new words."),
                   finetune_lr_scale: float = typer.Option(0.0, help="With --freeze-existing: old rows train at "
                                                                     "lr × this (0 = bit-identical).")):
    """Skip-gram with negative sampling from the cached examples; writes word_vectors and a loss PNG.

    Example: `embcache train word2vec bbc --dim 100 --epochs 5`
    """
    from ..pipeline.sgns import SGNSConfig
    from ..stages.word2vec_eval import loss_png
    from ..flows.word2vec_flows import train_word2vec_flow
    try:
        store = store_of(ctx)
        r = train_word2vec_flow(corpus, SGNSConfig(dim=dim, epochs=epochs, lr=lr, batch_size=batch_size),
                                seed, freeze_existing, finetune_lr_scale, store=store.root)
    except (StoreError, PipelineError, FlowError) as e:
        raise fail(e)
    png = None
    if store.fs.local:
        png = loss_png(r["loss_curve"], Path(store.root) / "reports" / f"word2vec-loss-{r['fingerprint'][:12]}.png")
    out.print(f"word_vectors@{r['fingerprint'][:12]}: {r['words']:,} words ({r['trained_rows']:,} trained), "
              f"{r['examples']:,} examples, {r['pairs_per_s']:,.0f} pairs/s, loss {r['loss_curve'][0]:.3f} → "
              f"{r['loss_curve'][-1]:.3f}")
    if png:
        out.print(f"loss curve: {png}", soft_wrap=True, highlight=False)


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
    try:
        r = evaluate(keyed_vectors(store_of(ctx), fingerprint), [str(p) for p in pairs] if pairs else None,
                     str(analogies) if analogies else None, restrict_vocab)
    except (StoreError, PipelineError, FlowError, OSError) as e:
        raise fail(e)
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


@query_app.command("neighbors")
def query_neighbors(ctx: typer.Context, word: str = typer.Argument(..., help="A word in the vocabulary."),
                    k: int = typer.Option(10, "--k", help="How many neighbours."),
                    fingerprint: str = typer.Option(None, help="word_vectors fingerprint (default: current)."),
                    as_json: bool = typer.Option(False, "--json")):
    """Nearest words by cosine over the trained word vectors.

    Example: `embcache query neighbors market --k 10`
    """
    from ..stages.word2vec_eval import keyed_vectors, neighbours
    try:
        hits = neighbours(keyed_vectors(store_of(ctx), fingerprint), word.lower(), k)
    except KeyError:
        raise fail(StoreError("word_vectors", f"{word!r} is not in the vocabulary"))
    except StoreError as e:
        raise fail(e)
    if as_json:
        print(json.dumps([{"word": w, "score": s} for w, s in hits]))
        return
    for w, s in hits:
        out.print(f"{s:.4f}  {w}", highlight=False, markup=False)


@export_app.command("vectors")
def export_vectors(ctx: typer.Context, path: Path = typer.Argument(..., help="Output file."),
                   fmt: VectorFormat = typer.Option(VectorFormat.word2vec, "--format"),
                   fingerprint: str = typer.Option(None, help="word_vectors fingerprint (default: current).")):
    """Write word vectors as word2vec text, word2vec binary or GloVe text (all load with gensim).

    Example: `embcache export vectors vectors.bin --format word2vec-binary`
    """
    from ..stages.word2vec_eval import export, keyed_vectors
    try:
        kv = keyed_vectors(store_of(ctx), fingerprint)
        export(kv, fmt.value, path)
    except StoreError as e:
        raise fail(e)
    out.print(f"wrote {len(kv):,} vectors ({kv.vector_size} dims, {fmt.value}) to {path}")
