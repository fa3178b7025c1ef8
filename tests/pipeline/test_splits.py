"""Labels, splits and metrics: real scikit-learn, small label arrays built here."""

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from embcache.pipeline.errors import PipelineError
from embcache.pipeline.splits import LabelSet, classification_metrics, split_from_column, stratified_split


def test_stratified_split_is_deterministic_disjoint_complete_and_stratified():
    y = np.repeat(np.arange(4), [500, 100, 30, 3])
    rng = np.random.default_rng(0)
    y = np.concatenate([y, [4]])[rng.permutation(len(y) + 1)]                # class 4: one member
    parts = stratified_split(y, seed=7)
    assert all(np.array_equal(parts[k], v) for k, v in stratified_split(y, seed=7).items())
    assert not np.array_equal(parts["train"], stratified_split(y, seed=8)["train"])
    every = np.concatenate(list(parts.values()))
    assert np.array_equal(np.sort(every), np.arange(len(y)))                 # disjoint and complete
    assert all(v.dtype == np.int64 and np.all(np.diff(v) > 0) for v in parts.values())
    counts = [[int((y[parts[s]] == cls).sum()) for s in ("train", "validation", "test")] for cls in range(5)]
    assert counts[:3] == [[400, 50, 50], [80, 10, 10], [24, 3, 3]]          # 0.8 / 0.1 / 0.1 of each class
    assert counts[3] == [1, 1, 1]                                             # 3 members: one in each part
    assert counts[4] == [1, 0, 0]                                             # a lone member trains
    sizes = stratified_split(np.zeros(1000, int), (0.6, 0.2, 0.2))
    assert [len(sizes[s]) for s in ("train", "validation", "test")] == [600, 200, 200]
    with pytest.raises(PipelineError, match="fractions"):
        stratified_split(y, (0.8, 0.3, 0.1))


def test_split_from_column_maps_aliases_and_rejects_unknown_names():
    values = ["train", "Validation", "dev ", "val", "valid", "test", "TRAIN", "training"]
    parts = split_from_column(values)
    assert {k: v.tolist() for k, v in parts.items()} == {"train": [0, 6, 7], "validation": [1, 2, 3, 4],
                                                         "test": [5]}
    with pytest.raises(PipelineError, match="unsupervised") as err:
        split_from_column(["train", "unsupervised"])
    assert "split[1]" in str(err.value)
    with pytest.raises(PipelineError, match=r"split\[1\]"):
        split_from_column(["train", None])
    with pytest.raises(PipelineError, match="no train rows"):
        split_from_column(["test", "dev"])


def test_split_from_column_carves_validation_out_of_train():
    labels = np.repeat([0, 1], [300, 100])
    values = ["train"] * 350 + ["test"] * 50
    parts = split_from_column(values, labels=labels, seed=3)
    assert len(parts["validation"]) == 35 and len(parts["train"]) == 315
    assert np.array_equal(np.sort(np.concatenate([parts["train"], parts["validation"]])), np.arange(350))
    assert (labels[parts["validation"]] == 1).sum() == 5                     # 50 of 350 train rows are class 1
    again = split_from_column(values, labels=labels, seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    unlabeled = split_from_column(values, seed=3)
    assert len(unlabeled["validation"]) == 35 and np.array_equal(unlabeled["test"], np.arange(350, 400))


def test_label_set_is_sorted_and_round_trips():
    values = ["tech", "sport", "business", "sport"]
    labels = LabelSet.from_values(values)
    assert labels.names == ("business", "sport", "tech") and len(labels) == 3
    assert labels.decode(labels.encode(values)) == values
    assert LabelSet.from_values(list(reversed(values))) == labels
    with pytest.raises(PipelineError, match=r"labels\[1\].*'film'"):
        labels.encode(["tech", "film"])
    with pytest.raises(PipelineError, match=r"labels\[2\]"):
        LabelSet.from_values(["a", "b", None])


def test_metrics_agree_with_sklearn():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    y_pred[:100] = y_true[:100]
    names = ["neg", "neu", "pos"]
    m = classification_metrics(y_true, y_pred, names)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2])
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    for i, name in enumerate(names):
        assert m["per_class"][name] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    assert m["confusion_matrix"] == confusion_matrix(y_true, y_pred).tolist()
    assert m["labels"] == names
    json.dumps(m)                                                             # plain JSON types
    missing = classification_metrics([0, 0], [0, 0], names)                  # classes 1, 2 never seen
    assert missing["confusion_matrix"] == [[2, 0, 0], [0, 0, 0], [0, 0, 0]]
