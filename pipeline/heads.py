"""Classification heads on cached sentence vectors: the model and its training (the versioned file
format: pipeline/head_format.py; splits, labels and metrics: pipeline/splits.py).

A head maps frozen features (N, H) to C class logits: dropout → Linear(H, C) (hidden = 0,
softmax regression) or dropout → Linear(H, hidden) → ReLU → dropout → Linear(hidden, C).
The first Linear works in standardized units (train-row mean/std kept as buffers, folded
into the weights at run time), so the saved head takes raw features. Arrays in, arrays out:

>>> labels = LabelSet.from_values(label_column)               # sorted names ↔ 0..C-1
>>> y = labels.encode(label_column)                           # (N,) int64
>>> parts = stratified_split(y, seed=0)                       # train / validation / test indices
>>> head, hist = train_head(x[parts["train"]], y[parts["train"]], x[parts["validation"]],
...                         y[parts["validation"]], len(labels), HeadConfig())
>>> pred = predict_proba(head, x[parts["test"]]).argmax(1)    # (N_test,)
>>> classification_metrics(y[parts["test"]], pred, labels.names)["accuracy"]
0.847...

Saved and loaded through pipeline/head_format.py (head_to_bytes / head_from_bytes).

The objective is scikit-learn LogisticRegression's: mean cross-entropy + (weight_decay/2n)·Σw²
over the raw-feature weights (weight_decay = 1/C). The default optimizer is torch's full-batch
L-BFGS (strong-Wolfe line search), one iteration per epoch, early-stopped on validation loss,
on a preconditioned parametrization W = V·P, P^-2 ≈ the loss curvature (feature covariance
from a row sample + the penalty): pooled BERT features are strongly correlated, so plain
first-order steps crawl. Measured on this 2-core CPU, 2026-11-21, moderately loaded (load 0.6-1.4):
sklearn LogisticRegression(max_iter=1000).fit vs train_head(HeadConfig()) on the same
80/10/10 stratified splits in one warm process (train_head best of 3), test accuracy:
  real: 35,816 BBC news sentences, packaged MiniLM mean-pooled (384-d), 5 topics, 3 splits:
    sklearn 84.60% in 2.9-3.2 s; train_head 84.72% in 0.36-0.50 s (18-25 epochs);
    per split Δ +0.34 / 0.00 / 0.00 pt. Its predictions match sklearn run to tol=1e-8 on
    99.94% of test rows (sklearn's default tol: 99.64%).
  synthetic: 38,000 × 384, 5 classes, correlated (rank-32 factor + noise), 3 splits:
    sklearn 75.59% in 1.2-1.6 s; train_head 75.72% in 0.38-0.48 s; Δ -0.11 / +0.34 / +0.16 pt.
  Without the preconditioner L-BFGS needs up to 5x the epochs (synthetic 52 vs 15, BBC
  sentences 19-35 vs 18-25). Adam on batches of 1024 (preconditioned) took ~3x as long and
  was 0.13 pt lower on average over 15 splits (worst -0.58). float16 input: ~0.2 s more.
Not in those times, nor in HeadHistory.seconds: the first optimizer a process builds makes torch
import torch._dynamo (1-2 s, once; a cold first call measured 2.6 s), and the first threaded eigh
starts MKL's LAPACK threads; `torch_startup` pays both first (HeadHistory.startup_seconds).
On a busy machine threads=1 is safer: at load ~4 on 2 cores one run took 0.74 s with 1 thread
and 2.1 s with 2.
Same seed, data and thread count → bit-identical weights (the tests use threads=1).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from .cores import torch_threads
from .errors import PipelineError
from .configs import HeadConfig  # noqa: F401  (defined once, in configs.py)




@dataclass
class HeadHistory:
    train_loss: list[float] = field(default_factory=list)    # mean (weighted) cross-entropy per epoch
    val_loss: list[float] = field(default_factory=list)      # the same on the validation rows, after the epoch
    val_accuracy: list[float] = field(default_factory=list)  # validation accuracy after each epoch
    best_epoch: int = -1        # index into the lists of the kept weights (last improving epoch)
    stopped_early: bool = False  # True: patience ran out before max_epochs
    seconds: float = 0.0        # wall time of the training itself (conversions, preconditioner, every
                                # epoch and its validation): the same for a head trained alone or in compare
    startup_seconds: float = 0.0  # torch's one-time costs in this process, paid before `seconds` starts
                                  # (`torch_startup`; 0 when an earlier training paid them)


def torch_startup(features: int, threads: int | None) -> float:
    """Pay, once per process, what torch's first L-BFGS head costs beyond its training: the
    first optimizer imports torch._dynamo (1-5 s here) and the first multi-threaded
    (H, H) eigh starts MKL's LAPACK threads (1.7-6 s here, measured under load). Measured by
    profiling `embcache train head` (10.3 s reported) against `compare`'s same head (0.54 s),
    which had paid both earlier in its process. Returns the seconds spent (~0 after the first)."""
    start = time.perf_counter()
    _startup(features, threads)
    return time.perf_counter() - start


@functools.lru_cache(maxsize=16)
def _startup(features: int, threads: int | None) -> None:
    torch.optim.LBFGS([nn.Parameter(torch.zeros(1))])
    with torch_threads(threads):
        a = torch.randn(features, features, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        torch.linalg.eigh(a @ a.t())


def train_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
               num_labels: int, config: HeadConfig) -> tuple[Head, HeadHistory]:
    """Train a head on (N, H) float16/float32 features and (N,) class indices; keep the best epoch.

    Each epoch is one L-BFGS iteration or one shuffled pass of Adam steps, then the loss and
    accuracy on all validation rows. Training stops at max_epochs or when `patience` epochs
    in a row bring no improvement, and the head returns in eval mode with the weights of its
    last improving epoch (history.best_epoch).
    """
    startup = torch_startup(np.shape(x_train)[1] if np.ndim(x_train) == 2 else 1, config.threads)
    start = time.perf_counter()
    xt, yt = _tensors(x_train, y_train, num_labels, "x_train")               # (N, H) float32, (N,) int64
    xv, yv = _tensors(x_val, y_val, num_labels, "x_val")                      # (M, H), (M,)
    if xv.shape[1] != xt.shape[1]:
        raise PipelineError("x_val", f"{xv.shape[1]} features, x_train has {xt.shape[1]}")
    if len(xt) == 0 or len(xv) == 0:
        raise PipelineError("train_head", f"need training and validation rows, got {len(xt)} and {len(xv)}")
    gen = torch.Generator().manual_seed(config.seed)
    head = Head(xt.shape[1], num_labels, config)
    head.reset_parameters(gen)
    if config.standardize:
        head.input_layer.fit_standardize(xt)
    weight = class_weight_vector(y_train, num_labels, config.class_weights)  # (C,) or None
    hist, best = HeadHistory(), None
    with torch_threads(config.threads), torch.random.fork_rng(devices=[]), \
            _preconditioned(head.input_layer, xt, config, num_labels):
        torch.manual_seed(config.seed)                                        # dropout masks (global RNG)
        run_epoch = _lbfgs_epochs(head, xt, yt, weight, config) if config.optimizer == "lbfgs" \
            else _adam_epochs(head, xt, yt, weight, config, gen)
        for epoch in range(config.max_epochs):
            hist.train_loss.append(run_epoch())
            val_loss, val_acc = _evaluate(head, xv, yv, weight)
            hist.val_loss.append(val_loss)
            hist.val_accuracy.append(val_acc)
            if best is None or val_loss < hist.val_loss[hist.best_epoch] - config.min_delta:
                hist.best_epoch, best = epoch, {k: v.clone() for k, v in head.state_dict().items()}
            elif epoch - hist.best_epoch >= config.patience:
                hist.stopped_early = True
                break
        head.load_state_dict(best)                                            # V of the best epoch; W = V @ P
    head.eval()
    hist.seconds, hist.startup_seconds = time.perf_counter() - start, startup
    return head, hist


def class_weight_vector(y: np.ndarray, num_labels: int,
                        mode: Literal["none", "balanced"]) -> torch.Tensor | None:
    """(C,) float32 loss weights n_samples / (n_classes * count_c) for "balanced", None for "none".

    n_classes counts the classes present; an absent class gets weight 0 (it has no rows).
    >>> class_weight_vector(np.array([0, 0, 0, 1]), 2, "balanced").tolist()
    [0.6666666865348816, 2.0]
    """
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(y, dtype=np.int64).reshape(-1), minlength=num_labels)  # (C,)
    present = counts > 0
    w = np.zeros(num_labels, dtype=np.float64)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return torch.from_numpy(w.astype(np.float32))


def predict_proba(head: nn.Module, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """(N, C) float32 class probabilities, eval mode (no dropout), no autograd."""
    xt = _features(x, "x")                                                    # (N, H) float32
    was_training = head.training
    head.eval()
    try:
        with torch.inference_mode():
            out = [F.softmax(head(xt[s:s + batch_size]), dim=1) for s in range(0, len(xt), batch_size)]
    finally:
        head.train(was_training)
    num_labels = head.num_labels if isinstance(head, Head) else 0
    return torch.cat(out).numpy() if out else np.empty((0, num_labels), dtype=np.float32)


class StandardizedLinear(nn.Linear):
    """Linear on standardized features, applied to raw ones: (x - mean) / scale @ W.T + b is
    computed as x @ (W / scale).T + (b - (W / scale) @ mean), so no standardized copy of x
    (N, H) is ever made. W is in standardized units (what weight_decay penalizes)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self.register_buffer("mean", torch.zeros(in_features))               # (H,) identity until fitted
        self.register_buffer("scale", torch.ones(in_features))               # (H,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight / self.scale                                          # (out, H) raw units
        return F.linear(x, w, self.bias - w @ self.mean)

    def fit_standardize(self, x: torch.Tensor, rows: int = 8192) -> None:
        """Per-feature mean and std of x (N, H), two passes in row chunks (no (N, H) temporary);
        a constant feature keeps scale 1."""
        mean = x.mean(dim=0)                                                  # (H,)
        sq = torch.zeros(x.shape[1], dtype=torch.float64)
        for chunk in x.split(rows):
            d = chunk - mean                                                  # (≤rows, H)
            sq += (d * d).sum(dim=0).double()
        std = (sq / max(len(x), 1)).sqrt()
        self.mean.copy_(mean)
        self.scale.copy_(torch.where(std > 1e-6 * std.max(), std, torch.ones_like(std)).float())


class Head(nn.Sequential):
    """logits (B, C) for raw features (B, H): dropout → StandardizedLinear(H, C), or
    dropout → StandardizedLinear(H, hidden) → ReLU → dropout → Linear(hidden, C)."""

    def __init__(self, feature_dim: int, num_labels: int, config: HeadConfig):
        def drop() -> nn.Module:
            return nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        if config.hidden == 0:
            layers = {"dropout": drop(), "classifier": StandardizedLinear(feature_dim, num_labels)}
        else:
            layers = {"dropout": drop(), "hidden": StandardizedLinear(feature_dim, config.hidden),
                      "relu": nn.ReLU(), "hidden_dropout": drop(),
                      "classifier": nn.Linear(config.hidden, num_labels)}
        super().__init__(OrderedDict(layers))
        self.feature_dim, self.num_labels, self.config = feature_dim, num_labels, config

    @property
    def input_layer(self) -> StandardizedLinear:
        return self.hidden if self.config.hidden else self.classifier

    def reset_parameters(self, gen: torch.Generator) -> None:
        """nn.Linear's own initialization (uniform ±1/sqrt(fan_in)), drawn from `gen`."""
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                bound = 1.0 / layer.in_features ** 0.5
                with torch.no_grad():
                    layer.weight.uniform_(-bound, bound, generator=gen)
                    layer.bias.uniform_(-bound, bound, generator=gen)


class _RightMultiply(nn.Module):
    """The parametrization W = V @ P (P symmetric, inverse given) of _preconditioned."""

    def __init__(self, p: torch.Tensor, p_inv: torch.Tensor):
        super().__init__()
        self.register_buffer("p", p)                                          # (H, H)
        self.register_buffer("p_inv", p_inv)                                  # (H, H)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.p

    def right_inverse(self, w: torch.Tensor) -> torch.Tensor:
        return w @ self.p_inv


@contextmanager
def _preconditioned(layer: StandardizedLinear, x: torch.Tensor, config: HeadConfig, classes: int,
                    rows: int = 8192, eps: float = 0.1) -> Iterator[None]:
    """Within the block the optimizer trains V, where layer.weight = V @ P and P = K^(-1/2) for K ≈
    the curvature of the objective in each output's weight row at uniform predictions:
    Σ (C-1)/C² + diag(penalty) + ε·mean(eig)·I, Σ the standardized features' covariance from
    ≤ 2·rows strided rows. The loss is the same function of W; in V its level sets are much
    rounder, so L-BFGS needs fewer iterations. On exit, weight = V @ P."""
    if not config.precondition:
        yield
        return
    sample = x[::max(1, len(x) // rows)]                                       # (≤2·rows, H), strided
    z = (sample - layer.mean) / layer.scale
    curvature = (z.t() @ z).double() / len(z) * (classes - 1) / classes ** 2   # (H, H)
    curvature += torch.diag(config.weight_decay / len(x) / layer.scale.double() ** 2)
    eig, vec = torch.linalg.eigh(curvature)
    eig = eig.clamp(min=0) + eps * eig.clamp(min=0).mean() + 1e-12
    p, p_inv = (vec * eig.rsqrt()) @ vec.t(), (vec * eig.sqrt()) @ vec.t()     # (H, H) each
    parametrize.register_parametrization(layer, "weight", _RightMultiply(p.float(), p_inv.float()))
    try:
        yield
    finally:
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)


def _lbfgs_epochs(head: Head, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
                  config: HeadConfig) -> Callable[[], float]:
    """A function running one full-batch L-BFGS iteration and returning the training loss after it.

    torch's LBFGS.step starts by evaluating the loss where the last step ended; the closure
    remembers its last point, loss and gradients, so that costs no second pass over the rows.
    """
    params = list(head.parameters())
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=1, max_eval=25, history_size=10,
                            tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
    memo: dict = {}

    def closure() -> torch.Tensor:
        point = torch.cat([p.detach().reshape(-1) for p in params])                     # (P,)
        if "point" not in memo or not torch.equal(point, memo["point"]):
            opt.zero_grad(set_to_none=False)
            head.train()
            data_loss = F.cross_entropy(head(x), y, weight=weight)                       # head(x): (N, C)
            loss = data_loss + _penalty(head, config.weight_decay, len(x))
            loss.backward()
            memo.update(point=point, loss=loss.detach(), data_loss=float(data_loss.detach()),
                        grads=[p.grad.clone() for p in params])
        else:
            for p, g in zip(params, memo["grads"]):
                p.grad.copy_(g)
        return memo["loss"]

    def epoch() -> float:
        opt.step(closure)
        closure()                                  # the accepted point: the next step's first evaluation
        return memo["data_loss"]
    return epoch


def _adam_epochs(head: Head, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
                 config: HeadConfig, gen: torch.Generator) -> Callable[[], float]:
    """A function running one shuffled pass of Adam steps and returning its mean training loss."""
    opt = torch.optim.Adam(head.parameters(), lr=config.lr)

    def epoch() -> float:
        head.train()
        total = torch.zeros((), dtype=torch.float64)
        for batch in torch.randperm(len(x), generator=gen).split(config.batch_size):
            data_loss = F.cross_entropy(head(x[batch]), y[batch], weight=weight)          # x[batch]: (B, H)
            opt.zero_grad(set_to_none=True)
            (data_loss + _penalty(head, config.weight_decay, len(x))).backward()
            opt.step()
            total += data_loss.detach() * len(batch)
        return float(total) / len(x)
    return epoch


def _penalty(head: Head, weight_decay: float, n_train: int) -> torch.Tensor:
    """(weight_decay / 2n)·Σ w² over the weights as applied to raw features (biases free): sklearn's
    LogisticRegression(C = 1 / weight_decay) objective, whatever standardize and precondition are."""
    total = sum((m.weight / m.scale if isinstance(m, StandardizedLinear) else m.weight).pow(2).sum()
                for m in head.modules() if isinstance(m, nn.Linear))
    return 0.5 * weight_decay / n_train * total


def _evaluate(head: Head, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
              batch_size: int = 8192) -> tuple[float, float]:
    """(mean loss, accuracy) over all rows, eval mode. The weighted loss divides by the weight
    sum, as F.cross_entropy's mean does, so chunks combine to the full-batch value."""
    head.eval()
    loss_sum, weight_sum, correct = 0.0, 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            logits, yb = head(x[s:s + batch_size]), y[s:s + batch_size]      # (B, C), (B,)
            loss_sum += float(F.cross_entropy(logits, yb, weight=weight, reduction="sum"))
            weight_sum += float(weight[yb].sum()) if weight is not None else len(yb)
            correct += int((logits.argmax(1) == yb).sum())
    return loss_sum / max(weight_sum, 1e-12), correct / len(x)


def _tensors(x: np.ndarray, y: np.ndarray, num_labels: int, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features as one float32 tensor (N, H) and labels as int64 (N,), checked."""
    xt = _features(x, where)
    yt = torch.from_numpy(np.asarray(y).reshape(-1).astype(np.int64, copy=False))
    if len(yt) != len(xt):
        raise PipelineError(where, f"{len(xt)} rows but {len(yt)} labels")
    if len(yt) and (int(yt.min()) < 0 or int(yt.max()) >= num_labels):
        raise PipelineError(where, f"labels span [{int(yt.min())}, {int(yt.max())}], num_labels is {num_labels}")
    return xt, yt


def _features(x: np.ndarray, where: str) -> torch.Tensor:
    """(N, H) float32 tensor, converted once; non-finite values are refused (they poison training)."""
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.dtype.kind != "f":
        raise PipelineError(where, f"need a 2-D float array, got shape {arr.shape} dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise PipelineError(where, f"{int((~np.isfinite(arr)).any(axis=1).sum())} rows hold NaN or inf")
    return torch.from_numpy(arr)






