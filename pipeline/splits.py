"""Labels, splits and metrics shared by every classifier of a corpus (pure: arrays in, arrays out).

>>> labels = LabelSet.from_values(texts_labels)               # sorted names <-> 0..C-1
>>> y = labels.encode(texts_labels)
>>> parts = stratified_split(y, seed=0)                       # train / validation / test indices
>>> classification_metrics(y[parts["test"]], predicted, labels.names)["macro_f1"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from .errors import PipelineError

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "dev": "validation", "val": "validation", "test": "test"}


@dataclass(frozen=True)
class LabelSet:
    """Label strings ↔ class indices 0..C-1, names sorted so the mapping never depends on row order.

    >>> labels = LabelSet.from_values(["sport", "tech", "sport"])
    >>> labels.names, labels.encode(["tech", "sport"]).tolist(), labels.decode([1])
    (('sport', 'tech'), [1, 0], ['tech'])
    """
    names: tuple[str, ...]

    def __post_init__(self):
        if list(self.names) != sorted(set(self.names)) or not all(isinstance(n, str) for n in self.names):
            raise PipelineError("LabelSet.names", "must be distinct strings in sorted order")

    @classmethod
    def from_values(cls, values: Sequence[str | None]) -> LabelSet:
        _check_labels_present(values)
        return cls(tuple(sorted(set(values))))

    def __len__(self) -> int:
        return len(self.names)

    def encode(self, values: Sequence[str | None]) -> np.ndarray:
        """(N,) int64 class indices; an unknown or missing label raises, naming its row."""
        index = {n: i for i, n in enumerate(self.names)}
        out = np.empty(len(values), dtype=np.int64)
        for row, v in enumerate(values):
            if v not in index:
                raise PipelineError(f"labels[{row}]", f"label {v!r} is not one of {list(self.names)}")
            out[row] = index[v]
        return out

    def decode(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        return [self.names[int(i)] for i in np.asarray(indices).reshape(-1)]


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Sorted, disjoint int64 index arrays "train", "validation", "test" covering range(N).

    Each class is shuffled (numpy Generator seeded by `seed`) and cut by largest-remainder
    rounding of its count × fractions, so every part holds each class in proportion, and a
    class with at least as many members as non-empty parts has a row in each of them. A
    rarer class fills train first. Same labels and seed → the same split.

    >>> parts = stratified_split(np.repeat([0, 1], 10), seed=0)
    >>> [len(parts[s]) for s in ("train", "validation", "test")]
    [16, 2, 2]
    """
    y = np.asarray(labels).reshape(-1)                                        # (N,)
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or (fr < 0).any() or fr[0] <= 0 or abs(fr.sum() - 1.0) > 1e-6:
        raise PipelineError("stratified_split.fractions", f"need 3 fractions ≥ 0 summing to 1 with train > 0, "
                                                          f"got {fractions!r}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls in np.unique(y):                                                  # sorted: deterministic
        members = rng.permutation(np.flatnonzero(y == cls))
        bounds = np.cumsum(_apportion(len(members), fr))[:-1]
        for part, idx in zip(parts, np.split(members, bounds)):
            part.append(idx)
    return {name: np.sort(np.concatenate(p)).astype(np.int64) if p else np.empty(0, np.int64)
            for name, p in zip(SPLITS, parts)}


def split_from_column(values: Sequence[str | None], labels: np.ndarray | None = None, seed: int = 0,
                      validation_fraction: float = 0.1) -> dict[str, np.ndarray]:
    """Index arrays per split from a source's split column (case and spaces ignored).

    train/training → "train"; validation/valid/dev/val → "validation"; test → "test". Any
    other name, or a missing one, raises naming the row. When no row is a validation row,
    `validation_fraction` of train is carved off as validation: stratified by `labels`
    when given (stratified_split with `seed`), else a seeded random subset. test may be empty.

    >>> {k: v.tolist() for k, v in split_from_column(["train", "dev", "Test", "train"]).items()}
    {'train': [0, 3], 'validation': [1], 'test': [2]}
    """
    names = []
    for row, v in enumerate(values):
        name = SPLIT_ALIASES.get(v.strip().lower()) if isinstance(v, str) else None
        if name is None:
            raise PipelineError(f"split[{row}]", f"unknown split {v!r}; expected one of {sorted(SPLIT_ALIASES)}")
        names.append(name)
    if labels is not None and len(labels) != len(names):
        raise PipelineError("split_from_column.labels", f"{len(labels)} labels for {len(names)} rows")
    names = np.asarray(names, dtype=object)
    parts = {s: np.flatnonzero(names == s).astype(np.int64) for s in SPLITS}
    if len(parts["train"]) == 0:
        raise PipelineError("split", "no train rows")
    if len(parts["validation"]) == 0:
        parts["train"], parts["validation"] = _carve(parts["train"], labels, seed, validation_fraction)
    return parts


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str]) -> dict:
    """accuracy, macro_f1, per_class {name: precision, recall, f1, support}, confusion_matrix
    (rows = true class, columns = predicted, in label_names order) and labels: plain JSON types.
    Classes absent from both y_true and y_pred still get a row (zeros) and count in macro_f1."""
    classes = list(range(len(label_names)))
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "per_class": {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                             "support": int(s[i])} for i, name in enumerate(label_names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        "labels": list(label_names),
    }


def _apportion(n: int, fractions: np.ndarray) -> np.ndarray:
    """Split n into len(fractions) counts by largest remainder; each non-empty part ≥ 1 when n allows.

    >>> _apportion(7, np.array([0.8, 0.1, 0.1])).tolist()
    [5, 1, 1]
    """
    exact = n * fractions
    counts = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - counts), kind="stable")[:n - counts.sum()]:
        counts[i] += 1
    wanted = np.flatnonzero(fractions > 0)
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                counts[np.argmax(counts)] -= 1
                counts[i] = 1
    return counts


def _carve(train: np.ndarray, labels: np.ndarray | None, seed: int,
           fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(rest of train, validation): `fraction` of the train indices, stratified when labels are given."""
    if not 0.0 < fraction < 1.0:
        raise PipelineError("split_from_column.validation_fraction", f"invalid value {fraction!r}")
    if labels is None:
        picked = np.random.default_rng(seed).permutation(len(train))[:round(len(train) * fraction)]
        is_val = np.zeros(len(train), dtype=bool)
        is_val[picked] = True
        return train[~is_val], train[is_val]
    labels = np.asarray(labels).reshape(-1)
    parts = stratified_split(labels[train], (1.0 - fraction, fraction, 0.0), seed)
    return train[parts["train"]], train[parts["validation"]]


def _check_labels_present(values: Sequence[str | None]) -> None:
    missing = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
    if missing is not None:
        raise PipelineError(f"labels[{missing}]", f"label {values[missing]!r} is not a string")
