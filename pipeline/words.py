"""Word tokens and the versioned word2vec vocabulary: texts in, CSR id arrays out.

>>> tokens = tokenize_words(["The cat's mat.", "A cat sat"], WordConfig(min_count=2))
>>> tokens
[['the', "cat's", 'mat'], ['a', 'cat', 'sat']]
>>> vocab = Vocabulary.build(tokens * 2, min_count=2)     # every word twice
>>> vocab.words[:3], vocab.counts[:3].tolist()            # id = position; ties sorted by word
(('<unk>', 'a', 'cat'), [0, 2, 2])
>>> vocab.encode([["the", "dog", "cat"]])                 # unknown words are dropped
(array([6, 2], dtype=int32), array([0, 2]))

Ids never move: `extend` appends words that reach min_count and returns a new
vocabulary (version + 1), so rows trained on an old version stay valid. Words
below min_count are remembered with their counts (`rare`), so building on A then
extending with B keeps the same words as building on A + B at once.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np
import pyarrow as pa

from .errors import PipelineError
from .formats import arrow_header
from .configs import WordConfig  # noqa: F401  (defined once, in configs.py)

UNK = "<unk>"                 # id 0: stands for every word below min_count
FORMAT = "embcache.vocabulary"
FORMAT_VERSION = 1            # bump when to_arrow's layout changes; from_arrow checks it

SCHEMA = pa.schema([
    ("word", pa.string()),    # rows 0..V-1: the vocabulary in id order; then the rare words
    ("count", pa.int64()),    # occurrences seen (for <unk>: all rare occurrences together)
    ("in_vocab", pa.bool_()),  # True for ids 0..V-1, False for rare words (not yet in vocab)
])



def tokenize_words(texts: Sequence[str], config: WordConfig) -> list[list[str]]:
    """One list of words per text, in order (re.findall of config.pattern)."""
    find = re.compile(config.pattern).findall
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise PipelineError(f"texts[{bad}]", f"expected str, got {type(texts[bad]).__name__}")
    if config.lowercase:
        return [find(t.lower()) for t in texts]
    return [find(t) for t in texts]


def count_words(token_lists: Iterable[Sequence[str]], into: Counter | None = None) -> Counter:
    """Occurrences of each word (added to `into` when given): counted batch by batch, merged.

    >>> count_words([["a", "b"], ["a"]])
    Counter({'a': 2, 'b': 1})
    """
    counts = Counter() if into is None else into
    for tokens in token_lists:
        counts.update(tokens)
    return counts


@dataclass(frozen=True, eq=False)
class Vocabulary:
    words: tuple[str, ...]          # (V,) id = position; words[0] == "<unk>"
    counts: np.ndarray              # (V,) int64 occurrences; counts[0] = rare occurrences
    min_count: int                  # occurrences a word needs to get an id
    version: int = 1                # 1 for build, +1 per extend
    rare: Mapping[str, int] = field(default_factory=dict)  # words below min_count -> count (read-only)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        counts = np.asarray(self.counts, dtype=np.int64).reshape(-1)
        counts.setflags(write=False)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "words", tuple(self.words))
        object.__setattr__(self, "rare", MappingProxyType(dict(self.rare)))
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})
        if not isinstance(self.min_count, int) or self.min_count < 1:
            raise PipelineError("Vocabulary.min_count", f"must be a positive int, got {self.min_count!r}")
        if not self.words or self.words[0] != UNK:
            raise PipelineError("Vocabulary.words", f"words[0] must be {UNK!r}")
        if len(self._index) != len(self.words):
            raise PipelineError("Vocabulary.words", "duplicate words")
        if len(counts) != len(self.words):
            raise PipelineError("Vocabulary.counts", f"{len(counts)} counts for {len(self.words)} words")
        if set(self.rare) & self._index.keys():
            raise PipelineError("Vocabulary.rare", "a rare word is also in the vocabulary")

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other) -> bool:
        return (isinstance(other, Vocabulary) and self.version == other.version
                and self.digest() == other.digest())

    __hash__ = None  # mutable-looking contents (a dict, an array): not a dict key

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_count: int) -> Vocabulary:
        """Words with ≥ min_count occurrences, most frequent first (ties by word), after <unk>."""
        return cls.from_counts(count_words(token_lists), min_count)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], min_count: int) -> Vocabulary:
        """`build` from word counts already made (e.g. merged shard by shard: O(vocabulary) memory)."""
        return cls((UNK,), np.zeros(1, np.int64), min_count, version=0).extend_counts(counts)

    def extend(self, token_lists: Iterable[Sequence[str]]) -> Vocabulary:
        """A new vocabulary: old ids unchanged, counts added, new words appended (see extend_counts)."""
        return self.extend_counts(count_words(token_lists))

    def extend_counts(self, seen: Mapping[str, int]) -> Vocabulary:
        """A new vocabulary from word counts: old ids unchanged, counts added, new words appended.

        A word joins when its old (rare) plus new occurrences reach min_count; the
        joiners are appended most frequent first, ties by word. version + 1.
        """
        counts = self.counts.copy()
        rare = dict(self.rare)
        for word, n in seen.items():
            if word == UNK:
                continue
            i = self._index.get(word)
            if i is not None:
                counts[i] += n
            else:
                rare[word] = rare.get(word, 0) + n
        joiners = sorted((w for w, n in rare.items() if n >= self.min_count), key=lambda w: (-rare[w], w))
        new_counts = np.array([rare.pop(w) for w in joiners], dtype=np.int64)
        counts = np.concatenate([counts, new_counts])
        counts[0] = sum(rare.values())
        return Vocabulary(self.words + tuple(joiners), counts, self.min_count, self.version + 1, rare)

    def encode(self, token_lists: Sequence[Sequence[str]],
               unknown: Literal["drop", "unk"] = "drop") -> tuple[np.ndarray, np.ndarray]:
        """CSR ids: (ids (T,) int32, offsets (D+1,) int64); text d is ids[offsets[d]:offsets[d+1]].

        unknown: "drop" removes words without an id (the d2l recipe); "unk" maps them to 0.
        """
        if unknown not in ("drop", "unk"):
            raise PipelineError("Vocabulary.encode", f"unknown must be 'drop' or 'unk', got {unknown!r}")
        get = self._index.get
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))   # (D,)
        total = int(lengths.sum())
        ids = np.fromiter((get(w, 0) for tokens in token_lists for w in tokens), dtype=np.int32, count=total)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)                  # (D+1,)
        if unknown == "unk":
            np.cumsum(lengths, out=offsets[1:])
            return ids, offsets
        known = ids != 0                                                      # (T,)
        doc = np.repeat(np.arange(len(lengths)), lengths)                     # (T,) text of each word
        np.cumsum(np.bincount(doc[known], minlength=len(lengths)), out=offsets[1:])
        return ids[known], offsets

    def digest(self) -> str:
        """sha256 over min_count, words, counts and rare words: changes iff the content does.

        The version number is not hashed: it labels content, the hash identifies it.
        """
        h = hashlib.sha256(f"{FORMAT} {FORMAT_VERSION} min_count={self.min_count}\n".encode())
        h.update("\n".join(self.words).encode("utf-8") + b"\0")
        h.update(self.counts.astype("<i8").tobytes())
        for word in sorted(self.rare):
            h.update(f"{word}\t{self.rare[word]}\n".encode("utf-8"))
        return h.hexdigest()

    def to_arrow(self) -> pa.Table:
        """SCHEMA rows (vocabulary, then rare words) with format, version and min_count in the metadata."""
        rare = sorted(self.rare)
        table = pa.Table.from_arrays([
            pa.array(list(self.words) + rare, pa.string()),
            pa.array(np.concatenate([self.counts, np.array([self.rare[w] for w in rare], np.int64)])),
            pa.array(np.r_[np.ones(len(self.words), bool), np.zeros(len(rare), bool)]),
        ], schema=SCHEMA)
        return table.replace_schema_metadata({
            "format": FORMAT, "format_version": str(FORMAT_VERSION),
            "version": str(self.version), "min_count": str(self.min_count)})

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Vocabulary:
        """The inverse of to_arrow; raises PipelineError on another format or format version."""
        meta = arrow_header(table, "Vocabulary.from_arrow", FORMAT, FORMAT_VERSION, "a vocabulary table", SCHEMA)
        words = table.column("word").to_pylist()
        counts = table.column("count").to_numpy()
        kept = table.column("in_vocab").to_numpy(zero_copy_only=False)
        v = int(kept.sum())
        if not kept[:v].all():
            raise PipelineError("Vocabulary.from_arrow", "vocabulary rows must come before rare rows")
        return cls(tuple(words[:v]), counts[:v], int(meta["min_count"]), int(meta["version"]),
                   dict(zip(words[v:], counts[v:].tolist())))
