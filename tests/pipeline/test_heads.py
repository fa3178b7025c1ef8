"""Classification heads: real torch and scikit-learn on small synthetic features built here."""

import json

import numpy as np
import pytest
import safetensors.torch
import torch
from torch.nn import functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.utils.class_weight import compute_class_weight

from embcache.pipeline.errors import PipelineError
from embcache.pipeline.head_format import HeadMismatch, head_from_bytes, head_to_bytes
from embcache.pipeline.heads import HeadConfig, _penalty, class_weight_vector, predict_proba, train_head
from embcache.pipeline.splits import classification_metrics, stratified_split

FP = "a" * 64                                              # a feature table's fingerprint


def blobs(n_per_class: int = 200, classes: int = 5, dim: int = 24, spread: float = 1.0, seed: int = 0):
    """Gaussian blobs: class c centred at 6·e_c (separable at spread 1), float32 (N, dim)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    centres = np.zeros((classes, dim))
    centres[np.arange(classes), np.arange(classes)] = 6.0
    x = centres[y] + spread * rng.standard_normal((len(y), dim)) + 3.0   # offset: standardization matters
    return x.astype(np.float32), y


def fit(x, y, config=HeadConfig(threads=1), seed=0):
    parts = stratified_split(y, seed=seed)
    head, hist = train_head(x[parts["train"]], y[parts["train"]], x[parts["validation"]],
                            y[parts["validation"]], int(y.max()) + 1, config)
    return head, hist, parts


@pytest.fixture(scope="module")
def trained():
    x, y = blobs()
    head, hist, parts = fit(x, y)
    return x, y, head, hist, parts


@pytest.mark.parametrize("config", [
    HeadConfig(threads=1),
    HeadConfig(optimizer="adam", lr=0.01, batch_size=64, threads=1),
    HeadConfig(optimizer="adam", hidden=32, dropout=0.1, batch_size=64, threads=1),
    HeadConfig(hidden=16, threads=1),
], ids=["lbfgs", "adam", "adam-hidden-dropout", "lbfgs-hidden"])
def test_separable_blobs_reach_99_percent(config):
    x, y = blobs()
    head, hist, parts = fit(x, y, config)
    te = parts["test"]
    proba = predict_proba(head, x[te])
    assert proba.shape == (len(te), 5) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert (proba.argmax(1) == y[te]).mean() >= 0.99
    assert hist.val_accuracy[hist.best_epoch] >= 0.99 and hist.seconds > 0
    assert len(hist.train_loss) == len(hist.val_loss) == len(hist.val_accuracy)
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert not head.training


def test_float16_features_train_like_float32():
    x, y = blobs()
    h32, _, parts = fit(x, y)
    h16, _, _ = fit(x.astype(np.float16), y)
    te = parts["test"]
    assert (predict_proba(h16, x[te].astype(np.float16)).argmax(1) == predict_proba(h32, x[te]).argmax(1)).all()


def test_early_stopping_keeps_the_best_epoch():
    """30 rows, 200 features, no penalty: the validation loss falls for a few epochs, then
    rises as the head memorizes noise. The head returned is the lowest-validation-loss epoch's."""
    x, y = blobs(n_per_class=100, classes=2, dim=200, spread=3.0, seed=1)
    order = np.random.default_rng(0).permutation(len(y))
    tr, va = order[:30], order[30:]
    config = HeadConfig(optimizer="adam", lr=0.002, batch_size=8, weight_decay=0.0, min_delta=0.0, patience=4,
                        max_epochs=200, precondition=False, threads=1)
    head, hist = train_head(x[tr], y[tr], x[va], y[va], 2, config)
    assert hist.stopped_early and hist.best_epoch >= 2                      # it fell, then rose
    assert hist.best_epoch == int(np.argmin(hist.val_loss))
    assert len(hist.val_loss) == hist.best_epoch + config.patience + 1       # stopped `patience` epochs later
    assert hist.val_loss[-1] > hist.val_loss[hist.best_epoch]
    assert hist.train_loss[-1] < hist.train_loss[hist.best_epoch]           # training kept improving
    kept = -np.log(predict_proba(head, x[va])[np.arange(len(va)), y[va]]).mean()
    assert kept == pytest.approx(hist.val_loss[hist.best_epoch], abs=1e-5)


def test_min_delta_ignores_tiny_improvements():
    x, y = blobs(seed=2)
    _, fine, _ = fit(x, y, HeadConfig(min_delta=0.0, threads=1))
    _, coarse, _ = fit(x, y, HeadConfig(min_delta=0.05, threads=1))
    assert len(coarse.val_loss) < len(fine.val_loss)
    assert all(coarse.val_loss[coarse.best_epoch] - v <= 0.05 for v in coarse.val_loss[coarse.best_epoch:])


def overlapping(n: int = 600, seed: int = 4):
    """3 overlapping classes in 8 correlated features of mixed scales and offset: not separable."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    mix = rng.standard_normal((8, 8)) * [0.5, 0.5, 1, 2, 2, 0.5, 1, 1.5]
    return ((rng.standard_normal((n, 8)) + 0.7 * np.eye(8)[y]) @ mix + 1.0).astype(np.float32), y


@pytest.mark.parametrize("standardize, precondition", [(True, True), (True, False), (False, False)])
def test_standardize_and_precondition_only_change_the_path(standardize, precondition):
    """Unpenalized, validated on its own training rows, every variant lands on sklearn's optimum."""
    x, y = overlapping()
    config = HeadConfig(weight_decay=0.0, standardize=standardize, precondition=precondition, min_delta=0.0,
                        patience=20, max_epochs=300, threads=1)
    head, hist = train_head(x, y, x, y, 3, config)
    want = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(x, y).predict_proba(x)   # (N, 3)
    optimum = -np.log(want[np.arange(len(y)), y]).mean()
    assert hist.val_loss[hist.best_epoch] == pytest.approx(optimum, abs=1e-5)   # a flat optimum: the loss
    np.testing.assert_allclose(predict_proba(head, x), want, atol=1e-2)         # pins it, probabilities less


def test_weight_decay_is_sklearns_inverse_c():
    """sklearn's LogisticRegression(C=0.5) solution is a stationary point of our loss at weight_decay=2."""
    x, y = overlapping()
    sk = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(x, y)
    head, _ = train_head(x, y, x, y, 3, HeadConfig(max_epochs=1, threads=1))       # fitted mean / scale
    layer = head.input_layer
    with torch.no_grad():                                                          # raw → standardized units
        layer.weight.copy_(torch.from_numpy(sk.coef_).float() * layer.scale)
        layer.bias.copy_(torch.from_numpy(sk.intercept_).float() + torch.from_numpy(sk.coef_).float() @ layer.mean)
    np.testing.assert_allclose(predict_proba(head, x), sk.predict_proba(x), atol=1e-5)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for weight_decay, stationary in ((2.0, True), (0.5, False)):
        head.zero_grad()
        (F.cross_entropy(head(xt), yt) + _penalty(head, weight_decay, len(x))).backward()
        largest = max(float(p.grad.abs().max()) for p in head.parameters())
        assert (largest < 1e-3) == stationary, (weight_decay, largest)   # float32 rounding: ~1e-4


def test_balanced_class_weights():
    y = np.array([0] * 90 + [1] * 10 + [2] * 20)
    np.testing.assert_allclose(class_weight_vector(y, 3, "balanced").numpy(),
                               compute_class_weight("balanced", classes=np.arange(3), y=y), rtol=1e-6)
    assert class_weight_vector(y, 3, "none") is None
    assert class_weight_vector(y, 4, "balanced")[3] == 0                    # absent class: no rows to weigh
    # overlapping, imbalanced (9:1): the minority is mostly misclassified unless its loss weighs more
    rng = np.random.default_rng(3)
    y = (rng.random(3000) < 0.1).astype(np.int64)
    x = (rng.standard_normal((3000, 8)) + 1.2 * y[:, None] * np.eye(8)[0]).astype(np.float32)
    recall = {}
    for mode in ("none", "balanced"):
        head, _, parts = fit(x, y, HeadConfig(class_weights=mode, threads=1))
        pred = predict_proba(head, x[parts["test"]]).argmax(1)
        recall[mode] = classification_metrics(y[parts["test"]], pred, ["a", "b"])["per_class"]["b"]["recall"]
    assert recall["balanced"] > recall["none"] + 0.3


def test_round_trip_through_bytes_gives_identical_predictions(trained):
    x, _, head, _, _ = trained
    files = head_to_bytes(head, {"labels": list("abcde"), "feature_fingerprint": FP, "corpus": "bbc"})
    assert set(files) == {"head.safetensors", "head.json"}
    doc = json.loads(files["head.json"])
    assert doc["format"] == "embcache.head" and doc["format_version"] == 1
    assert doc["num_labels"] == 5 and doc["feature_dim"] == 24 and doc["corpus"] == "bbc"
    assert doc["config"]["optimizer"] == "lbfgs" and doc["standardize"]["enabled"] is True
    tensors = safetensors.torch.load(files["head.safetensors"])              # plain safetensors, no pickle
    assert torch.equal(tensors["classifier.mean"], head.input_layer.mean) and tensors["classifier.mean"].abs().min() > 1
    loaded, meta = head_from_bytes(files, expected_feature_fingerprint=FP)
    assert meta["labels"] == list("abcde") and not loaded.training
    np.testing.assert_array_equal(predict_proba(loaded, x), predict_proba(head, x))
    assert head_from_bytes(files, None)[1]["feature_fingerprint"] == FP
    legacy = {**files, "head.json": json.dumps({**doc, "format": "embcache-head"}).encode()}   # saved before
    assert head_from_bytes(legacy, FP)[1]["labels"] == list("abcde")                        # names were unified


def test_head_to_bytes_needs_labels_and_fingerprint(trained):
    head = trained[2]
    with pytest.raises(PipelineError, match="labels"):
        head_to_bytes(head, {"labels": ["a"], "feature_fingerprint": FP})
    with pytest.raises(PipelineError, match="feature_fingerprint"):
        head_to_bytes(head, {"labels": list("abcde")})
    with pytest.raises(PipelineError, match="format_version"):
        head_to_bytes(head, {"labels": list("abcde"), "feature_fingerprint": FP, "format_version": 2})


def test_head_from_other_features_raises_head_mismatch(trained):
    files = head_to_bytes(trained[2], {"labels": list("abcde"), "feature_fingerprint": FP})
    other = "b" * 64
    with pytest.raises(HeadMismatch) as err:
        head_from_bytes(files, expected_feature_fingerprint=other)
    assert FP[:12] in str(err.value) and other[:12] in str(err.value)
    assert "another model/config" in str(err.value)
    assert isinstance(err.value, PipelineError)


@pytest.mark.parametrize("change, message", [
    ({"format_version": 2}, "version 2; this code reads"),
    ({"format": "something-else"}, "format 'something-else'"),
])
def test_other_formats_are_refused(trained, change, message):
    files = head_to_bytes(trained[2], {"labels": list("abcde"), "feature_fingerprint": FP})
    doc = {**json.loads(files["head.json"]), **change}
    with pytest.raises(PipelineError, match=message):
        head_from_bytes({**files, "head.json": json.dumps(doc).encode()}, FP)
    with pytest.raises(PipelineError, match="missing"):
        head_from_bytes({"head.json": files["head.json"]}, FP)


@pytest.mark.parametrize("config", [HeadConfig(threads=1),
                                    HeadConfig(optimizer="adam", hidden=8, dropout=0.2, max_epochs=5, threads=1)],
                         ids=["lbfgs", "adam-dropout"])
def test_same_seed_gives_identical_weights(config):
    x, y = blobs(n_per_class=60, spread=3.0)
    first, h1, _ = fit(x, y, config)
    second, h2, _ = fit(x, y, config)
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), k
    assert h1.val_loss == h2.val_loss
    other, _, _ = fit(x, y, HeadConfig(**{**config.__dict__, "seed": 1}))
    assert not torch.equal(other.input_layer.weight, first.input_layer.weight)


@pytest.mark.parametrize("field, value", [("hidden", -1), ("dropout", 1.0), ("optimizer", "sgd"), ("lr", 0.0),
                                          ("batch_size", 0), ("patience", 0), ("class_weights", "auto"),
                                          ("threads", 0), ("min_delta", -1.0)])
def test_config_rejects_invalid_values(field, value):
    with pytest.raises(PipelineError, match=f"HeadConfig.{field}"):
        HeadConfig(**{field: value})


def test_dropout_needs_adam():
    with pytest.raises(PipelineError, match="HeadConfig.dropout.*needs optimizer=.adam."):
        HeadConfig(dropout=0.1)                                               # lbfgs: deterministic loss only
    HeadConfig(dropout=0.1, optimizer="adam")


def test_train_head_checks_its_inputs():
    x, y = blobs(n_per_class=10)
    with pytest.raises(PipelineError, match="labels span"):
        train_head(x, y, x, y, 3, HeadConfig(threads=1))
    with pytest.raises(PipelineError, match="features"):
        train_head(x, y, x[:, :5], y, 5, HeadConfig(threads=1))
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(PipelineError, match="NaN"):
        train_head(bad, y, x, y, 5, HeadConfig(threads=1))
    with pytest.raises(PipelineError, match="validation rows"):
        train_head(x, y, x[:0], y[:0], 5, HeadConfig(threads=1))
