"""`embcache featurize bert|word2vec`: precompute features into the store (only what is missing)."""

from __future__ import annotations

import typer

from ..flows.run_config import RunConfig, Word2VecSection
from ..pipeline.configs import EncodeConfig, SkipGramConfig, TokenizeConfig, WordConfig
from .app import featurize_app, out, prefect_api, store_of
from .options import option
from .progress import progress_bars


@featurize_app.command("bert")
def featurize_bert(ctx: typer.Context,
                   corpus: str = typer.Argument(..., help="An ingested corpus."),
                   model: str = option(RunConfig, "model",
                                       help="HF id or local path (default: the packaged MiniLM)."),
                   pooling: str = option(EncodeConfig, "pooling", help="mean (default), cls, or the model's "
                                                                       "pooler output (untrained in MiniLM)."),
                   max_length: int = option(TokenizeConfig, "max_length",
                                            help="Tokens per text (per window); longer texts are truncated."),
                   long_documents: str = option(TokenizeConfig, "long_documents",
                                                help="truncate: keep the first --max-length tokens; windows: "
                                                     "encode every --max-length window, average their vectors."),
                   max_windows: int = option(TokenizeConfig, "max_windows",
                                             help="With --long-documents windows: the first k windows per "
                                                  "text (0 = all)."),
                   batch_tokens: int = option(EncodeConfig, "batch_tokens", help="Padded tokens per forward batch."),
                   quantize: str = option(EncodeConfig, "quantize",
                                          help="int8: torch's dynamic int8 Linear layers; int8-channel: "
                                               "ONNX Runtime's, a scale per weight column (closer to fp32)."),
                   dtype: str = option(EncodeConfig, "dtype", help="Stored vector dtype."),
                   backend: str = option(EncodeConfig, "backend",
                                         help="auto: on a CPU, torch or onnx, whichever ran this corpus faster "
                                              "on this machine (measured once, kept in the store); torch on "
                                              "a GPU. Same vectors within 1e-4: same table."),
                   device: str = option(EncodeConfig, "device",
                                        help="auto (CUDA when torch sees a GPU, else cpu), cpu, cuda, cuda:N, mps. "
                                             "Speed only: the same table."),
                   precision: str = option(EncodeConfig, "precision",
                                           help="fp32; bf16 or fp16 (GPUs; bf16 also on CPUs with bf16 units): "
                                                "another table."),
                   shard_docs: int = typer.Option(None, help="Documents per encode task (default: the flow's "
                                                             "encode_shard_docs; on a GPU 8192).")):
    """Tokenize and encode CORPUS's documents into bert_tokens / bert_features (only what is missing).

    A changed model, pooling, max length, dtype, precision or quantization makes a new table;
    nothing cached under another configuration is ever served.

    Example: `embcache featurize bert bbc --pooling cls --max-length 128`,
    `embcache featurize bert bbc --long-documents windows --max-windows 8`,
    `embcache featurize bert bbc --device auto --precision fp32`
    """
    from ..flows import runners
    shards = {} if shard_docs is None else {"encode_shard_docs": shard_docs}
    tokenize, encode = (TokenizeConfig(max_length=max_length, long_documents=long_documents, max_windows=max_windows),
                        EncodeConfig(pooling=pooling, dtype=dtype, batch_tokens=batch_tokens, quantize=quantize,
                                     backend=backend, device=device, precision=precision))
    if check_device(ctx, encode) != "cpu" and shard_docs is None:
        shards = {"encode_shard_docs": GPU_SHARD_DOCS}
    store = store_of(ctx)
    store.corpus(corpus).require()
    with prefect_api("featurize_flows"), progress_bars(), runners.session(ctx.obj["runner"], device=device):
        from ..flows.featurize_flows import featurize_bert_flow
        r = runners.on(featurize_bert_flow)(corpus, model, tokenize, encode, store=store.root, **shards)
    out.print(f"{r.texts:,} texts: tokenized {r.tokenize.computed:,} (cached {r.tokenize.cached:,}), "
              f"encoded {r.encode.computed:,} (cached {r.encode.cached:,})")
    out.print(f"bert_features@{r.features_fingerprint[:12]}  model {r.model}")
    out.print(encoder_line(r.encoder), highlight=False, markup=False)
    for stage in ("tokenize", "encode"):
        if getattr(r, stage).dropped:
            out.print(f"{stage}: {getattr(r, stage).dropped:,} texts were computed here too, but another run "
                      "committed them first: its rows are kept, ours were dropped")
    if r.split:
        out.print(f"{r.split:,} of {r.texts:,} texts ({r.split / max(r.texts, 1):.0%}) were split into "
                  f"{r.windows - r.texts + r.split:,} windows of {r.max_length} tokens")
    if r.truncated and long_documents == "windows":
        out.print(f"{r.truncated:,} of {r.texts:,} texts were cut after {max_windows} windows: raise "
                  f"--max-windows (0 = all)")
    elif r.truncated:
        room = (f"raise --max-length (the model takes {r.model_limit}) or --long-documents windows"
                if r.model_limit and r.model_limit > r.max_length else "--long-documents windows")
        out.print(f"{r.truncated:,} of {r.texts:,} texts ({r.truncated / max(r.texts, 1):.0%}) were cut "
                  f"at {r.max_length} tokens: {room}")
    if quantize != "none":
        report_quantization(ctx, corpus, r)


# encode shard size on a GPU: 512 documents (the CPU's ~3 s) take an H100 milliseconds, so the
# task's own costs (store reads, commit, Prefect) would dominate; 8192 at 256 tokens is ~1 s at fp32
GPU_SHARD_DOCS = 8192


def check_device(ctx: typer.Context, encode: EncodeConfig) -> str:
    """--device checked before anything starts, where this process is where it will run (not
    a cluster at --dask-address, whose workers may have GPUs this machine lacks); its type."""
    runner = ctx.obj["runner"]
    if runner is not None and runner.address:
        return "cuda" if encode.device.startswith("cuda") else "cpu"     # auto there: unknown, CPU-sized
    from ..stages.bert import encode_device
    return encode_device(encode).type          # PipelineError naming what to install: exit 2


def encoder_line(e: dict) -> str:
    """'encoder: onnx, fp32 on cpu (auto: torch 0.612 s, onnx 0.548 s on 16 texts, …)'."""
    where = f"{e['precision'] if e['quantize'] == 'none' else e['quantize']} on {e['device']}"
    choices = e.get("choices")
    if choices is None:
        return f"encoder: {e['backend']}, {where}"
    here = [c for c in choices if c["here"]]
    if not here:
        return "\n".join([f"encoder: auto, {where}; measured for this model (by other processes or runs):"]
                         + [f"  {c['line']}" for c in choices])
    return "\n".join([f"encoder: {e['backend']}, {where} (auto, measured: {here[0]['line']})"]
                     + [f"  also on record: {c['line']}" for c in choices if not c["here"]])


def report_quantization(ctx: typer.Context, corpus: str, r) -> None:
    """Fidelity of int8 vs fp32 on a sample of the corpus, measured and printed."""
    import numpy as np
    from ..pipeline.encode import encode, quantization_fidelity
    from ..stages import bert
    store = store_of(ctx)
    sample = store.corpus(corpus).read(columns=["text_sha"])["text_sha"].to_pylist()[:128]
    meta = store.open("bert_features", r.features_fingerprint).saved_spec()["meta"]
    ids = store.open("bert_tokens", r.tokens_fingerprint).lookup(sorted(set(sample)), ["input_ids"])["input_ids"]
    enc = EncodeConfig(**meta["encode"])
    fp32 = EncodeConfig(**{**meta["encode"], "quantize": "none", "backend": "torch"})
    q = encode(ids, bert.cached_encoder(store.root, meta["model"], enc, None), enc)
    f = encode(ids, bert.cached_model(meta["model"], "none", "cpu", "fp32"), fp32)
    fid = quantization_fidelity(np.asarray(f, np.float32), np.asarray(q, np.float32))
    out.print(f"{enc.quantize} fidelity vs fp32 on {len(ids)} texts: mean cosine {fid['mean_cosine']:.4f}, "
              f"min {fid['min_cosine']:.4f}")


@featurize_app.command("word2vec")
def featurize_word2vec(ctx: typer.Context,
                       corpus: str = typer.Argument(..., help="An ingested corpus."),
                       min_count: int = option(WordConfig, "min_count", help="Occurrences a word needs to get an id."),
                       window: int = option(SkipGramConfig, "max_window",
                                            "--window", help="Max context window; each center draws 1..window."),
                       negatives: int = option(SkipGramConfig, "negatives",
                                               help="Noise words per context word (∝ count^0.75)."),
                       subsample: float = option(SkipGramConfig, "subsample",
                                                 help="t in keep = min(1, sqrt(t/f)); 0 turns it off."),
                       subsample_formula: str = option(
                           SkipGramConfig, "subsample_formula",
                           help="d2l: min(1, sqrt(t/f)); gensim: word2vec.c's softer "
                                "(sqrt(f/t)+1)·t/f, which keeps more words."),
                       draws: str = option(SkipGramConfig, "draws",
                                           help="epoch: store each document's word ids; training draws "
                                                "windows, negatives and subsampling anew every epoch. "
                                                "stored: d2l's rows, drawn once and stored."),
                       epochs_of_examples: int = option(Word2VecSection, "epochs_of_examples",
                                                        help="With --draws stored: independently sampled "
                                                             "copies of the examples."),
                       seed: int = option(Word2VecSection, "seed",
                                          help="With --draws stored: seed (with the fingerprint and shard) "
                                               "of the sampling."),
                       vocabulary: str = option(Word2VecSection, "vocabulary",
                                                help="keep: the corpus's vocabulary stays (new words are "
                                                     "dropped); extend: grow it, existing ids never move; "
                                                     "rebuild: a new one from the current snapshot."),
                       shard_docs: int = typer.Option(None, min=1, help="Documents per examples task, a shard each "
                                                                 "(default: the flow's, 2,048)."),
                       extend: bool = typer.Option(False, "--extend", hidden=True,
                                                   help="The same as --vocabulary extend.")):
    """Build the vocabulary and precompute skip-gram examples into w2v_examples (only missing documents).

    Window, negatives and subsampling are recorded with the examples; by default training
    draws them anew every epoch (--draws epoch), and the cache holds each document's word ids.

    Example: `embcache featurize word2vec bbc --window 5 --negatives 5`,
    `embcache featurize word2vec bbc --draws stored --subsample 1e-4 --epochs-of-examples 2`
    """
    from ..flows import runners
    from ..stages.word2vec import ExamplesConfig
    if extend:
        vocabulary = "extend"
    words, skipgram = (WordConfig(min_count=min_count),
                       SkipGramConfig(subsample=subsample or None, max_window=window, negatives=negatives,
                                      subsample_formula=subsample_formula, draws=draws))
    ExamplesConfig(words, skipgram, epochs_of_examples, seed)        # checked before Prefect starts
    store = store_of(ctx)
    store.corpus(corpus).require()
    with prefect_api("word2vec_flows"), progress_bars(), runners.session(ctx.obj["runner"], device="cpu"):
        from ..flows.word2vec_flows import featurize_word2vec_flow
        shards = {} if shard_docs is None else {"shard_docs": shard_docs}
        r = runners.on(featurize_word2vec_flow)(corpus, words, skipgram, epochs_of_examples, seed,
                                                extend=vocabulary == "extend", store=store.root,
                                                keep_vocabulary=vocabulary == "keep", **shards)
    v = r["vocab"]
    out.print(f"vocabulary v{v['version']}: {v['words']:,} words ({v['added_words']:,} new); examples for "
              f"{r['computed']:,} documents ({r['cached']:,} cached): {r['rows']:,} rows")
    out.print(f"w2v_examples@{r['examples_fingerprint'][:12]}")
