"""word2vec as units of work over the store (no Prefect here: flows wrap these).

    documents ──vocab──▶ w2v_vocab ──examples_shard──▶ w2v_examples ──train──▶ word_vectors

- `w2v_vocab` (key: word) is built from a corpus snapshot's texts; `--extend` builds the
  next version from the parent plus the texts added since its snapshot: existing ids never move.
- `w2v_examples` (key: text_sha) holds what training reads, computed once per document:
  * draws "epoch" (the default): one row per document, its in-vocabulary word ids in order
    (`ids`, list<int32>): every center with its contexts at the maximum window, and nothing
    an epoch changes. Training draws subsampling, windows and negatives anew each epoch
    from its seed (pipeline/sgns_kernels.py). A document without any such word has an
    empty list, so it counts as done.
  * draws "stored" (the d2l recipe): one row per center and epoch of examples, contexts
    and negatives drawn once (mask and label as per-row counts: they are prefixes). A
    document with no example at all gets one row with epoch -1 and n_valid 0, so it
    counts as done; training reads epochs >= 0 only.
  A document's rows are committed together, so reruns skip what exists.
- `word_vectors` (key: word) holds both trained tables (vector, context_vector), so a later
  run can continue from them with the old rows frozen.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..pipeline.configs import output_fields
from ..pipeline.errors import PipelineError
from ..pipeline.sgns import SGNSConfig, TrainReport, init_vectors, train, warm_up
from ..pipeline.skipgram import EpochDraws, SkipGramConfig, make_examples
from ..pipeline.words import FORMAT, FORMAT_VERSION, Vocabulary, WordConfig, count_words, tokenize_words
from ..storage import FeatureStore, NotFound
from . import planning
from .stage import Stage

VOCAB = Stage("w2v_vocab", 1)             # build_vocab
EXAMPLES = Stage("w2v_examples", 4)       # examples_shard. 2: mask and label stored as per-row counts
                                          #   (they are prefixes of each row); 3: a document with no
                                          #   example gets one epoch -1 row (reruns skip it); 4: draws
                                          #   "epoch" (the default) stores each document's ids instead
TRAIN = Stage("word_vectors", 2)          # train_vectors. 2: reads documents and draws per epoch
NO_EXAMPLES_EPOCH = -1
DECODED_BUDGET = 512 << 20    # bytes of decoded examples train_vectors may keep between epochs


@dataclass(frozen=True)
class ExamplesConfig:
    words: WordConfig = field(default_factory=WordConfig)
    skipgram: SkipGramConfig = field(default_factory=SkipGramConfig)
    # draws "stored" only: independently sampled copies of the examples (each its own draw);
    #   with draws "epoch" every epoch draws anew, so there is nothing to copy: 1.
    epochs_of_examples: int = 1
    # draws "stored" only: with the table's fingerprint and the shard's keys, seeds each shard
    #   (draws "epoch": the training seed seeds the draws; no stored row depends on a seed).
    seed: int = 0
    shard_docs: int = 2048           # documents per examples task: a commit each (256 made 3,900 at 10^6)
    speed_only: ClassVar[tuple[str, ...]] = ("shard_docs",)   # shard size changes no row

    def __post_init__(self):
        if not isinstance(self.epochs_of_examples, int) or self.epochs_of_examples < 1:
            raise PipelineError("epochs_of_examples", f"must be a positive int, got {self.epochs_of_examples!r}")
        if self.skipgram.draws == "epoch" and self.epochs_of_examples != 1:
            raise PipelineError("epochs_of_examples", f"{self.epochs_of_examples} needs draws 'stored' "
                                "(--draws stored): with per-epoch draws every epoch draws anew")
        if self.skipgram.draws == "epoch" and self.skipgram.max_len is not None:
            raise PipelineError("SkipGramConfig.max_len", "pads stored rows: it needs draws 'stored'")

    def hashed(self) -> dict:
        """The fields that change stored rows (and what training reads from the table's spec)."""
        out = output_fields(self)
        if self.skipgram.draws == "epoch":           # no draw is stored: seed and copies change no row
            del out["seed"], out["epochs_of_examples"]
        return out


def texts_digest(keys) -> str:
    """sha256 of the keys sorted and joined by newlines; streamed for a sorted Arrow array.

    >>> texts_digest(["b", "a"]) == texts_digest(pa.array(["a", "b"]))
    True
    """
    if not isinstance(keys, (pa.Array, pa.ChunkedArray)):
        return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()
    h, step = hashlib.sha256(), 65536
    keys = keys.sort() if isinstance(keys, pa.Array) else keys.combine_chunks().sort()
    for start in range(0, len(keys), step):
        if start:
            h.update(b"\n")
        h.update("\n".join(keys.slice(start, step).to_pylist()).encode())
    return h.hexdigest()


def vocab_table(vocab: Vocabulary) -> pa.Table:
    return vocab.to_arrow().replace_schema_metadata(None)


def vocab_from_table(table: pa.Table, meta: dict) -> Vocabulary:
    """The store keeps rows; the vocabulary's own format header lives in the table's meta."""
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
              "version": str(meta["version"]), "min_count": str(meta["min_count"])}
    return Vocabulary.from_arrow(table.replace_schema_metadata(header))


@functools.lru_cache(maxsize=4)
def load_vocab(store_root: str, fingerprint: str) -> Vocabulary:
    """A committed vocabulary, once per process (a fingerprint's content never changes)."""
    table = FeatureStore(store_root).open("w2v_vocab", fingerprint)
    return vocab_from_table(table.read(), table.saved_spec()["meta"])


def documents_of(store: FeatureStore, corpus: str):
    """The documents table (text_sha -> text) the corpus's last ingest linked."""
    return store.open("documents", store.resolve_linked(corpus, "documents"))


def texts_of(store: FeatureStore, corpus: str, keys: list[str]) -> list[str]:
    return documents_of(store, corpus).lookup(keys, ["text"])["text"].to_pylist()


COUNT_BATCH = 8192          # texts tokenized at a time while counting words (memory: one batch of texts)


def count_corpus_words(store: FeatureStore, corpus: str, keys: pa.Array, config: WordConfig) -> Counter:
    """Word counts of the texts `keys`, read batch by batch in storage order: O(batch + vocabulary) memory."""
    docs = documents_of(store, corpus)
    counts: Counter = Counter()
    ordered = planning.in_storage_order(docs, keys)
    for start in range(0, len(ordered), COUNT_BATCH):
        texts = docs.lookup(ordered.slice(start, COUNT_BATCH), ["text"])["text"].to_pylist()
        count_words(tokenize_words(texts, config), counts)
    return counts


def build_vocab(store_root: str, corpus: str, config: WordConfig, extend: bool = False, keep: bool = False) -> dict:
    """Build (or extend) the corpus's vocabulary; returns {"fingerprint", "words", "version", "added_words"}.

    keep: use the corpus's current vocabulary as it is when it was built with this config
    (new documents then only add examples; their words outside it are dropped); build
    one when there is none. Every example depends on the vocabulary (ids, subsampling,
    noise distribution), so a changed vocabulary means all examples are computed again.
    Words are counted batch by batch and merged (count_corpus_words): memory does not
    grow with the corpus, only with its vocabulary.
    """
    store = FeatureStore(store_root)
    snap = store.corpus(corpus).snapshot().id
    if keep and "w2v_vocab" in store.corpus(corpus).manifest().links:
        current = store.open("w2v_vocab", store.resolve_linked(corpus, "w2v_vocab"))
        if current.saved_spec()["spec"]["config"] == VOCAB.spec(config)["config"]:
            current.finish_pointer()          # a commit cut before its pointer is finished here too
            vocab = load_vocab(store_root, current.fingerprint)
            return {"fingerprint": current.fingerprint, "words": len(vocab), "version": vocab.version,
                    "added_words": 0}
    keys = planning.snapshot_keys(store, corpus)
    parent, old = None, None
    if extend:
        try:
            parent = store.open("w2v_vocab", store.resolve_linked(corpus, "w2v_vocab"))
        except NotFound:
            parent = None
    if parent is None:
        counted = keys
        inputs = {"texts": texts_digest(keys)}
    else:
        meta = parent.saved_spec()["meta"]
        old = load_vocab(store_root, parent.fingerprint)
        seen = planning.snapshot_keys(store, corpus, meta["snapshot"])
        counted = keys.filter(pc.invert(pc.is_in(keys, value_set=seen)))
        inputs = {"parent": parent.fingerprint, "texts": texts_digest(counted)}
    table_spec = VOCAB.spec(config, inputs=inputs)
    table = store.table("w2v_vocab", table_spec, key="word")
    if table.exists():          # same fingerprint, same inputs: it holds exactly this vocabulary
        vocab = load_vocab(store_root, table.fingerprint)
    else:
        counts = count_corpus_words(store, corpus, counted, config)
        vocab = old.extend_counts(counts) if old is not None else Vocabulary.from_counts(counts, config.min_count)
        table = store.table("w2v_vocab", table_spec, key="word",
                            meta={"version": vocab.version, "min_count": vocab.min_count, "snapshot": snap,
                                  "digest": vocab.digest()})
        table.write(vocab_table(vocab))
    store.corpus(corpus).link("w2v_vocab", table.fingerprint)
    return {"fingerprint": table.fingerprint, "words": len(vocab), "version": vocab.version,
            "added_words": len(vocab) - (len(old) if old is not None else 0)}


@dataclass(frozen=True)
class ExamplesPlan:
    store: str
    corpus: str
    vocab_fingerprint: str
    config: ExamplesConfig
    examples_spec: dict


def plan_examples(store_root: str, corpus: str, vocab_fp: str, config: ExamplesConfig) -> ExamplesPlan:
    return ExamplesPlan(store_root, corpus, vocab_fp, config,
                        EXAMPLES.spec(config.hashed(), inputs={"w2v_vocab": vocab_fp}))


def examples_table(plan: ExamplesPlan):
    store = FeatureStore(plan.store)
    return store, store.table("w2v_examples", plan.examples_spec, key="text_sha")


def shard_rng(plan: ExamplesPlan, keys: list[str]) -> np.random.Generator:
    """Reproducible from the fingerprint, the seed and which documents the shard holds."""
    fp = FeatureStore(plan.store).table("w2v_examples", plan.examples_spec).fingerprint
    digest = hashlib.sha256(f"{fp}\0{plan.config.seed}\0{texts_digest(keys)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def examples_shard(plan: ExamplesPlan, keys: list[str]) -> int:
    """These documents' examples, committed as one shard. Returns rows."""
    store, table = examples_table(plan)
    vocab = load_vocab(plan.store, plan.vocab_fingerprint)
    ids, offsets = vocab.encode(tokenize_words(texts_of(store, plan.corpus, keys), plan.config.words))
    if plan.config.skipgram.draws == "epoch":
        rows = documents_table(keys, ids, offsets)
    else:
        rows = stored_rows(plan, keys, ids, offsets, vocab.counts)
    shard = table.write(rows)
    if shard is None and not table.exists():
        table.create()
    return shard.rows if shard else 0


def documents_table(keys: list[str], ids: np.ndarray, offsets: np.ndarray) -> pa.Table:
    """One row per document: text_sha, ids (its in-vocabulary word ids in order, list<int32>)."""
    return pa.table({"text_sha": pa.array(keys, pa.string()),
                     "ids": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(ids, pa.int32()))})


def as_documents(shard: pa.Table) -> dict[str, np.ndarray]:
    """A documents shard as the training kernel reads it: ids (T,) int32, offsets (D+1,) int64."""
    lists = shard["ids"].combine_chunks()                                           # handles sliced chunks
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)   # (D,)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return {"ids": lists.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False),
            "offsets": offsets}


def stored_rows(plan: ExamplesPlan, keys: list[str], ids: np.ndarray, offsets: np.ndarray,
                counts: np.ndarray) -> pa.Table:
    """The d2l recipe's rows: every epoch of examples drawn now, one row per center and epoch."""
    rng = shard_rng(plan, keys)
    L = plan.config.skipgram.row_len
    parts = []
    for epoch in range(plan.config.epochs_of_examples):
        ex = make_examples(ids, offsets, counts, plan.config.skipgram, rng)
        n = len(ex["center"])
        n_valid, n_contexts = prefix_lengths(ex["mask"]), prefix_lengths(ex["label"])
        parts.append(pa.table({
            "text_sha": pa.array(np.asarray(keys, dtype=object)[ex["doc"]] if n else [], pa.string()),
            "epoch": pa.array(np.full(n, epoch, np.int16)),
            "center": pa.array(ex["center"]),
            "contexts_negatives": pa.FixedSizeListArray.from_arrays(pa.array(ex["contexts_negatives"].ravel()), L),
            "n_valid": pa.array(n_valid),          # mask = first n_valid entries
            "n_contexts": pa.array(n_contexts),    # label = first n_contexts entries
        }))
    done = set()
    for part in parts:
        done.update(pc.unique(part["text_sha"]).to_pylist())
    empty = [k for k in keys if k not in done]   # fewer than 2 in-vocabulary words (or all subsampled)
    if empty:
        n = len(empty)
        parts.append(pa.table({
            "text_sha": pa.array(empty, pa.string()),
            "epoch": pa.array(np.full(n, NO_EXAMPLES_EPOCH, np.int16)),
            "center": pa.array(np.zeros(n, np.int32)),
            "contexts_negatives": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(n * L, np.int32)), L),
            "n_valid": pa.array(np.zeros(n, np.int16)),
            "n_contexts": pa.array(np.zeros(n, np.int16)),
        }).cast(parts[0].schema))
    return pa.concat_tables(parts)


def prefix_lengths(flags: np.ndarray) -> np.ndarray:
    """(N,) int16 count of leading ones per row of a (N, L) 0/1 array that must be a prefix.

    Mask and label rows are prefixes (contexts, then negatives, then padding), so two small
    ints per row store them exactly: half the bytes to decode per training epoch.
    """
    lengths = flags.sum(axis=1, dtype=np.int64).astype(np.int16)                  # (N,)
    if not np.array_equal(flags.astype(bool), np.arange(flags.shape[1]) < lengths[:, None]):
        raise ValueError("mask/label rows are not prefixes: cannot store them as lengths")
    return lengths


def as_batch(shard: pa.Table) -> dict[str, np.ndarray]:
    """The model's inputs from a stored shard: center, contexts_negatives, mask, label."""
    from ..storage.query import as_matrix
    cn = as_matrix(shard["contexts_negatives"], np.int32)                           # (N, L)
    pos = np.arange(cn.shape[1], dtype=np.int16)                                    # (L,)
    n_valid = shard["n_valid"].to_numpy()[:, None]                                  # (N, 1)
    n_contexts = shard["n_contexts"].to_numpy()[:, None]
    return {"center": shard["center"].to_numpy(), "contexts_negatives": cn,
            "mask": (pos < n_valid).view(np.uint8), "label": (pos < n_contexts).view(np.uint8)}


@dataclass(frozen=True)
class TrainResult:
    fingerprint: str
    words: int                  # vocabulary words (without <unk>)
    examples: int               # centers trained, all epochs (gensim's effective words)
    pairs: int                  # (center, context or negative) entries trained, all epochs
    seconds: float              # the task's training time: reading the examples, setup, the kernel
    pairs_per_s: float          # pairs / the kernel's own time
    loss_curve: list[float]     # mean BCE per entry, one per batch
    trained_rows: int           # rows that trained (all words, or the new ones with freeze_existing)


def train_vectors(store_root: str, corpus: str, examples_fp: str, vocab_fp: str, config: SGNSConfig,
                  seed: int = 0, freeze_existing: bool = False, finetune_lr_scale: float = 0.0) -> TrainResult:
    """Train on the cached examples (kept decoded or streamed shard by shard, every epoch); commit word_vectors.

    Documents (draws "epoch") train with subsampling, windows and negatives drawn per epoch
    from `seed` (SkipGramConfig from the examples table's spec); stored rows replay their draws.

    freeze_existing: start from the corpus's last word_vectors; rows of words it already had
    stay bit-identical (finetune_lr_scale 0) or train at lr * finetune_lr_scale; new words train.
    A table with the same fingerprint is never trained twice: its stored result is returned.
    """
    from ..storage.query import as_matrix
    store = FeatureStore(store_root)
    examples = store.open("w2v_examples", examples_fp)
    vocab = load_vocab(store_root, vocab_fp)
    inputs, prev = {"w2v_examples": examples_fp}, None
    # threads change speed only (and make Hogwild runs nondeterministic); batch_size sets
    # the lr schedule's steps, so it stays in the fingerprint (SGNSConfig.speed_only).
    cfg = {**output_fields(config), "seed": seed}
    # training reads every committed example row: when new documents add shards (same
    #   examples fingerprint, more rows), the vectors are trained again.
    cfg["examples_shards"] = hashlib.sha256("".join(sorted(sh.sha256 for sh in examples.manifest().shards))
                                            .encode()).hexdigest()
    if freeze_existing:
        prev = store.open("word_vectors", store.resolve_linked(corpus, "word_vectors"))
        inputs["init"] = prev.fingerprint
        cfg["finetune_lr_scale"] = finetune_lr_scale
        config = SGNSConfig(**{**asdict(config), "other_rows_lr_scale": finetune_lr_scale})
    table_spec = TRAIN.spec(cfg, inputs=inputs)
    cached = store.table("word_vectors", table_spec, key="word")
    if cached.exists():
        store.corpus(corpus).link("word_vectors", cached.fingerprint)
        return TrainResult(**cached.saved_spec()["meta"]["result"])

    start = time.perf_counter()       # the task's training time: reading, drawing setup and the kernel
    skipgram = SkipGramConfig(**examples.saved_spec()["spec"]["config"]["skipgram"])
    # numba's first call in a process costs ~1 s (loading the kernel, initializing numba): overlap it
    warm = threading.Thread(target=warm_up, args=(skipgram.draws == "epoch",), daemon=True)
    warm.start()
    center, context = init_vectors(len(vocab), config.dim, np.random.default_rng(seed),
                                   init=config.init)                                   # (V, H) each
    trainable = None
    if prev is not None:
        old = prev.read()
        ids = old["id"].to_numpy()                      # ids never move when a vocabulary grows
        center[ids], context[ids] = as_matrix(old["vector"]), as_matrix(old["context_vector"])
        trainable = np.setdiff1d(np.arange(1, len(vocab)), ids)
    if skipgram.draws == "epoch":
        batches, per_epoch = document_batches(examples)
        draws = EpochDraws.of(vocab.counts, skipgram, seed)
    else:
        batches, per_epoch = stored_batches(examples, config.epochs)
        draws = None
    warm.join()
    report: TrainReport = train(batches, center, context, config, trainable_rows=trainable,
                                total_examples=per_epoch, draws=draws)
    seconds = time.perf_counter() - start
    result = TrainResult(cached.fingerprint, len(vocab) - 1, report.examples, report.pairs,
                         round(seconds, 3), round(report.pairs / max(report.seconds, 1e-9), 1),
                         [float(x) for x in report.loss_curve],
                         len(vocab) - 1 if trainable is None else len(trainable))
    table = store.table("word_vectors", table_spec, key="word", meta={"result": asdict(result)})
    dim = config.dim
    table.write(pa.table({
        "word": pa.array(vocab.words[1:], pa.string()),
        "id": pa.array(np.arange(1, len(vocab), dtype=np.int32)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(center[1:].ravel()), dim),
        "context_vector": pa.FixedSizeListArray.from_arrays(pa.array(context[1:].ravel()), dim)}))
    store.corpus(corpus).link("word_vectors", table.fingerprint)
    return result


def document_batches(examples) -> tuple:
    """(epoch -> documents batches, tokens per epoch) of a draws "epoch" table.

    The decoded documents are kept between epochs when they fit DECODED_BUDGET (4 bytes a
    token: BBC's 0.83 M tokens take 3.3 MB), so Parquet is decoded once; else every epoch
    reads the shards again, one at a time.
    """
    kept, tokens, size = [], 0, 0
    for shard in examples.iter_shards(["ids"]):
        batch = as_documents(shard)
        tokens += len(batch["ids"])
        size += batch["ids"].nbytes + batch["offsets"].nbytes
        if kept is not None and size <= DECODED_BUDGET:
            kept.append(batch)
        else:
            kept = None
    if kept is not None:
        return (lambda epoch: kept), tokens
    return (lambda epoch: (as_documents(shard) for shard in examples.iter_shards(["ids"]))), tokens


def stored_batches(examples, epochs: int) -> tuple:
    """(epoch -> stored rows batches, rows per epoch) of a draws "stored" table: epoch e reads draw e mod K.

    With fewer stored draws than epochs (K = 1 by default) the same rows are read again:
    the decoded batches are kept when they fit DECODED_BUDGET, so Parquet is decoded once per
    draw (a reader thread decoding zstd halved the kernel's rate on 2 cores: BENCHMARKS.md).
    """
    config = examples.saved_spec()["spec"]["config"]
    K = config["epochs_of_examples"]
    rows_per_epoch = int(pc.sum(pc.equal(examples.read(["epoch"])["epoch"], 0)).as_py() or 0)
    width = SkipGramConfig(**config["skipgram"]).row_len   # L
    keep = K < epochs and rows_per_epoch * width * 6 * K <= DECODED_BUDGET   # int32 + 2 uint8 per slot
    decoded: dict[int, list] = {}

    def batches(epoch: int):   # rows are stored epoch by epoch: row-group statistics skip the others
        if epoch % K in decoded:
            yield from decoded[epoch % K]
            return
        done = []
        for shard in examples.iter_shards(["center", "contexts_negatives", "n_valid", "n_contexts"],
                                          filters=[("epoch", "=", epoch % K)]):
            batch = as_batch(shard)
            if keep:
                done.append(batch)
            yield batch
        if keep:
            decoded[epoch % K] = done

    return batches, rows_per_epoch
