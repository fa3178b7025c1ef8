"""Fine-tune a BERT classifier in two phases: the head on cached pooler vectors, then end to end.

In BertForSequenceClassification, logits = classifier(dropout(pooler_output)). While the
encoder is frozen, each document's pooler_output is a constant, and the store already
holds it (bert_features encoded with pooling "pooler"). So phase 1 trains only
`model.classifier` on those cached (N, H) vectors, with the model's own dropout applied
to them: no encoder forward pass at all. Phase 2 unfreezes the top K encoder layers (or
all of them) plus pooler and classifier, and trains from token ids, starting from
phase 1's head:

>>> model = load_classifier(path, num_labels=2)              # pipeline/model.py
>>> config = FinetuneConfig(freeze_epochs=3, unfreeze_epochs=2, unfreeze_layers=2)
>>> head = train_frozen_head(model, pooler_vectors, labels, config)      # (N, H) cached
>>> full = finetune(model, input_ids, labels, config, on_checkpoint=keep_files)
>>> predict_logits(model, input_ids).shape
(N, 2)

Phase 2 checkpoints are files of bytes, no pickle: model.safetensors (the full
state_dict), optimizer.safetensors (AdamW moments and step counts as "state.{i}.{name}",
param groups in its header metadata) and checkpoint.json (format, version, position,
config, lr schedule, losses so far). Each epoch's order is a pure function of (seed,
phase, epoch) and every step re-seeds torch from (seed, phase, global step)
(pipeline/steps.py), so a run resumed from a checkpoint ends with the weights of a run
never stopped. Training re-seeds inside `torch.random.fork_rng`: the caller's generator
state is left as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from .checkpoints import (CHECKPOINT_FILES, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_optimizer_bytes,
                          optimizer_bytes, read_checkpoint_meta)
from .cores import torch_threads
from .devices import resolve_device
from .encode import id_arrays, length_sorted_batches, pad_batch
from .errors import PipelineError
from .steps import adamw, epoch_batches, optimizer_order, optimizer_step, private_rng, reseed
from .configs import FinetuneConfig  # noqa: F401  (defined once, in configs.py)

_FROZEN, _UNFROZEN = 1, 2            # phase ids in the seeds: the phases draw different streams
_RESUME_MAY_CHANGE = ("threads", "checkpoint_every", "device")  # config fields that do not change the result



@dataclass
class PhaseReport:
    phase: Literal["frozen", "unfrozen"]
    epoch_loss: list[float] = field(default_factory=list)     # mean cross-entropy per document, per epoch
    val_accuracy: list[float] = field(default_factory=list)   # after each epoch; empty without val
    epoch_seconds: list[float] = field(default_factory=list)  # wall time per epoch, validation included
    steps: int = 0                                            # optimizer steps, all epochs (resumed ones too)
    trainable: list[str] = field(default_factory=list)        # parameter names the optimizer updated


@dataclass(frozen=True)
class CheckpointInfo:
    epoch: int             # the next batch to run is batch `step` of epoch `epoch` (0-based) ...
    step: int
    global_step: int       # ... and optimizer steps taken so far, all epochs
    epoch_end: bool        # written at the end of an epoch (step 0 of the next)


def unfreeze(model: nn.Module, layers: int | None) -> list[str]:
    """Set requires_grad: the top `layers` encoder layers, pooler and classifier (None: all).

    Returns the trainable parameter names in model order.

    >>> unfreeze(tiny_2_layer_model, 1)[:2]
    ['bert.encoder.layer.1.attention.self.query.weight', 'bert.encoder.layer.1.attention.self.query.bias']
    """
    base = getattr(model, model.base_model_prefix)
    if layers is None:
        keep = {id(p) for p in model.parameters()}
    else:
        stack = base.encoder.layer
        if layers > len(stack):
            raise PipelineError("FinetuneConfig.unfreeze_layers",
                                f"{layers} layers asked, the encoder has {len(stack)}")
        modules = list(stack[len(stack) - layers:]) + [getattr(base, "pooler", None), _head(model)]
        keep = {id(p) for m in modules if m is not None for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def train_frozen_head(model: nn.Module, features: np.ndarray, labels: np.ndarray | Sequence[int],
                      config: FinetuneConfig,
                      val: tuple[np.ndarray, np.ndarray] | None = None) -> PhaseReport:
    """Phase 1: train `model.classifier` on cached pooler vectors (N, H); the encoder never runs.

    Each step applies the model's head dropout to the batch's vectors, then the
    classifier and cross-entropy; AdamW at constant head_lr. The model is left in eval mode.
    """
    head = _head(model)
    device = resolve_device(config.device)
    model.to(device)
    x = _features(features, model, "features").to(device)                    # (N, H)
    y = torch.from_numpy(_labels(labels, len(x), model, "labels")).to(device)   # (N,)
    p_drop = _head_dropout(model)
    named = [(f"classifier.{n}", p) for n, p in head.named_parameters()]
    optimizer = adamw(named, config.head_lr, config.weight_decay)
    params = [p for _, p in named]
    report = PhaseReport("frozen", trainable=[n for n, _ in named])
    with torch_threads(config.threads), private_rng(device):
        for epoch in range(config.freeze_epochs):
            start, loss_sum = time.perf_counter(), 0.0
            for batch in epoch_batches(len(x), config.head_batch_size, config.seed, _FROZEN, epoch):
                idx = torch.from_numpy(batch).to(device)
                reseed(config.seed, _FROZEN, report.steps)
                logits = head(F.dropout(x[idx], p_drop, training=True))          # (B, C)
                loss = F.cross_entropy(logits, y[idx])
                optimizer_step(optimizer, loss, params, config.max_grad_norm)
                loss_sum += loss.item() * len(batch)
                report.steps += 1
            report.epoch_loss.append(loss_sum / len(x))
            if val is not None:
                report.val_accuracy.append(_accuracy(predict_from_features(model, val[0]), val[1]))
            report.epoch_seconds.append(time.perf_counter() - start)
    model.eval()
    return report


def finetune(model: nn.Module, input_ids: Sequence, labels: np.ndarray | Sequence[int],
             config: FinetuneConfig, val: tuple[Sequence, np.ndarray] | None = None,
             resume: dict[str, bytes] | None = None,
             on_checkpoint: Callable[[CheckpointInfo, dict[str, bytes]], None] | None = None,
             on_step: Callable[[int, int], None] | None = None) -> PhaseReport:
    """Phase 2: train the unfrozen part end to end from token ids (with [CLS]/[SEP]).

    resume: files an earlier on_checkpoint received for the same model, data and config
      (threads and checkpoint_every may differ); model, optimizer and position are restored.
    on_checkpoint(info, files): called every config.checkpoint_every steps and at each
      epoch end; an exception it raises stops training (the files it got are complete).
    on_step(steps, total): after each optimizer step (progress), with this phase's total steps.
    The model is left in eval mode, with requires_grad as unfreeze set it.
    """
    rows = id_arrays(input_ids)
    y_np = _labels(labels, len(rows), model, "labels")
    trainable = unfreeze(model, config.unfreeze_layers)
    device = resolve_device(config.device)
    model.to(device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = adamw(named, config.lr, config.weight_decay)
    run = _Run(config=config, rows=rows, y=torch.from_numpy(y_np).to(device), device=device,
               optimizer=optimizer, params=[p for _, p in named],
               pad_id=model.config.pad_token_id or 0,
               steps_per_epoch=math.ceil(len(rows) / config.batch_size),
               report=PhaseReport("unfrozen", trainable=trainable),
               identity={"trainable": optimizer_order(optimizer, named), "documents": len(rows),
                         "data_sha256": _data_digest(rows, y_np)})
    if resume is not None:
        _restore(run, model, resume)
    run.on_step = on_step
    with torch_threads(config.threads), private_rng(device):
        while run.epoch < config.unfreeze_epochs:
            _train_epoch(run, model, val, on_checkpoint)
    model.eval()
    return run.report


def predict_logits(model: nn.Module, input_ids: Sequence, batch_tokens: int = 2048,
                   threads: int | None = None, device: str | None = None) -> np.ndarray:
    """Logits (N, C) float32 in input order; eval mode, no grad, length-sorted batches.

    device: where to run (a name resolve_device takes); None: where the model's weights are."""
    rows = id_arrays(input_ids)
    device = resolve_device(device) if device is not None else next(model.parameters()).device
    model.to(device).eval()
    out = np.empty((len(rows), model.config.num_labels), dtype=np.float32)   # (N, C)
    pad_id = model.config.pad_token_id or 0
    with torch_threads(threads), torch.inference_mode():
        for batch in length_sorted_batches([len(r) for r in rows], batch_tokens):
            ids, mask = pad_batch([rows[i] for i in batch], pad_id)               # (B, T), (B, T)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            out[batch] = logits.float().cpu().numpy()                         # back to input order
    return out


def predict_from_features(model: nn.Module, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """Logits (N, C) float32 from cached pooler vectors (N, H): the classifier alone.

    Equals predict_logits on the documents the vectors were encoded from (eval mode:
    dropout is the identity), at the cost of one (H, C) matmul per document.
    """
    head = _head(model)
    weight = next(head.parameters())
    x = _features(features, model, "features")                              # (N, H)
    with torch.inference_mode():
        parts = [head(x[i:i + batch_size].to(weight.device)).float().cpu()
                 for i in range(0, len(x), batch_size)]
    return torch.cat(parts).numpy() if parts else np.empty((0, model.config.num_labels), np.float32)


# --- phase 2 internals ------------------------------------------------------------------------

@dataclass
class _Run:
    """Phase 2's inputs and position; the position is what a checkpoint saves."""
    config: FinetuneConfig
    rows: list[np.ndarray]
    y: torch.Tensor                 # (N,) int64 on device
    device: torch.device
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    pad_id: int
    steps_per_epoch: int
    report: PhaseReport
    identity: dict                  # trainable names, documents, data digest: must match on resume
    epoch: int = 0
    step: int = 0                   # next batch within the epoch
    loss_sum: float = 0.0           # this epoch's summed per-document loss so far
    seconds: float = 0.0            # this epoch's wall time before a resume
    on_step: Callable[[int, int], None] | None = None     # progress: (steps done now, total steps)


def _train_epoch(run: _Run, model: nn.Module, val, on_checkpoint) -> None:
    """Run the batches of run.epoch from run.step on; checkpoints as configured."""
    config, report = run.config, run.report
    batches = epoch_batches(len(run.rows), config.batch_size, config.seed, _UNFROZEN, run.epoch)
    start = time.perf_counter()
    model.train()
    while run.step < len(batches):
        batch = batches[run.step]
        for group in run.optimizer.param_groups:
            group["lr"] = _lr_at(config, report.steps, run.steps_per_epoch * config.unfreeze_epochs)
        reseed(config.seed, _UNFROZEN, report.steps)
        ids, mask = pad_batch([run.rows[i] for i in batch], run.pad_id)            # (B, T), (B, T)
        logits = model(input_ids=ids.to(run.device), attention_mask=mask.to(run.device)).logits
        loss = F.cross_entropy(logits, run.y[torch.from_numpy(batch).to(run.device)])
        optimizer_step(run.optimizer, loss, run.params, config.max_grad_norm)
        run.loss_sum += loss.item() * len(batch)
        run.step += 1
        report.steps += 1
        if run.on_step:
            run.on_step(1, run.steps_per_epoch * config.unfreeze_epochs)
        if (on_checkpoint and config.checkpoint_every and report.steps % config.checkpoint_every == 0
                and run.step < len(batches)):
            elapsed = run.seconds + time.perf_counter() - start
            on_checkpoint(_info(run, False), _checkpoint_files(run, model, elapsed))
    report.epoch_loss.append(run.loss_sum / len(run.rows))
    if val is not None:
        report.val_accuracy.append(_accuracy(predict_logits(model, val[0]), val[1]))
    report.epoch_seconds.append(run.seconds + time.perf_counter() - start)
    run.epoch, run.step, run.loss_sum, run.seconds = run.epoch + 1, 0, 0.0, 0.0
    if on_checkpoint:
        on_checkpoint(_info(run, True), _checkpoint_files(run, model, 0.0))


def _info(run: _Run, epoch_end: bool) -> CheckpointInfo:
    return CheckpointInfo(epoch=run.epoch, step=run.step, global_step=run.report.steps, epoch_end=epoch_end)


def _lr_at(config: FinetuneConfig, step: int, total: int) -> float:
    """lr for 0-based `step` of `total`: warm up to lr by step W-1, then fall to lr/(T-W) at T-1."""
    if config.schedule == "constant":
        return config.lr
    warmup = _warmup_steps(config, total)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return config.lr * max(total - step, 0) / max(total - warmup, 1)


def _warmup_steps(config: FinetuneConfig, total: int) -> int:
    return round(config.warmup_fraction * total) if config.schedule == "linear" else 0


def _checkpoint_files(run: _Run, model: nn.Module, seconds: float) -> dict[str, bytes]:
    """The three checkpoint files, from CPU copies of the tensors."""
    config, report = run.config, run.report
    total = run.steps_per_epoch * config.unfreeze_epochs
    meta = {
        "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "phase": "unfrozen",
        "epoch": run.epoch, "step": run.step, "global_step": report.steps,
        "config": dataclasses.asdict(config),
        "schedule": {"kind": config.schedule, "lr": config.lr, "total_steps": total,
                     "warmup_steps": _warmup_steps(config, total),
                     "last_lr": run.optimizer.param_groups[0]["lr"]},
        "epoch_loss": report.epoch_loss, "val_accuracy": report.val_accuracy,
        "epoch_seconds": report.epoch_seconds,
        "epoch_loss_sum": run.loss_sum, "epoch_seconds_so_far": seconds,
        **run.identity,
    }
    weights = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    return {"model.safetensors": save_tensors(weights),
            "optimizer.safetensors": optimizer_bytes(run.optimizer),
            "checkpoint.json": json.dumps(meta, indent=1).encode()}


def _restore(run: _Run, model: nn.Module, files: dict[str, bytes]) -> None:
    """Check a checkpoint against this run, then load weights, optimizer state and position."""
    missing = [name for name in CHECKPOINT_FILES if name not in files]
    if missing:
        raise PipelineError("resume", f"checkpoint lacks {missing}; has {sorted(files)}")
    meta = read_checkpoint_meta(files["checkpoint.json"])
    mine = dataclasses.asdict(run.config)
    changed = sorted(k for k in mine if k not in _RESUME_MAY_CHANGE and meta["config"].get(k) != mine[k])
    changed += [k for k, v in run.identity.items() if meta.get(k) != v]
    if changed:
        raise PipelineError("checkpoint.json", f"written for another run: {changed} differ from this one's")
    try:
        model.load_state_dict(load_tensors(files["model.safetensors"]), strict=True)
    except RuntimeError as e:
        raise PipelineError("model.safetensors", f"does not fit this model: {e}") from e
    load_optimizer_bytes(run.optimizer, files["optimizer.safetensors"])
    run.epoch, run.step, run.report.steps = meta["epoch"], meta["step"], meta["global_step"]
    run.loss_sum, run.seconds = meta["epoch_loss_sum"], meta["epoch_seconds_so_far"]
    run.report.epoch_loss = list(meta["epoch_loss"])
    run.report.val_accuracy = list(meta["val_accuracy"])
    run.report.epoch_seconds = list(meta["epoch_seconds"])


# --- shared helpers ---------------------------------------------------------------------------

def _head(model: nn.Module) -> nn.Module:
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Module):
        raise PipelineError(type(model).__name__, "no `classifier` head; load it with load_classifier")
    return head


def _head_dropout(model: nn.Module) -> float:
    """The dropout BertForSequenceClassification applies to the pooler output."""
    p = getattr(model.config, "classifier_dropout", None)
    return float(model.config.hidden_dropout_prob if p is None else p)


def _features(features: np.ndarray, model: nn.Module, where: str) -> torch.Tensor:
    x = np.asarray(features)
    hidden = model.config.hidden_size
    if x.ndim != 2 or x.shape[1] != hidden:
        raise PipelineError(where, f"shape {x.shape}, expected (N, {hidden}) pooler vectors")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _labels(labels, n: int, model: nn.Module, where: str) -> np.ndarray:
    y = np.asarray(labels)
    classes = model.config.num_labels
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise PipelineError(where, f"{y.dtype} {y.shape}, expected ({n},) integer class ids")
    if n == 0:
        raise PipelineError(where, "no documents to train on")
    if y.min() < 0 or y.max() >= classes:
        raise PipelineError(where, f"class ids {y.min()}..{y.max()} outside 0..{classes - 1}")
    return y.astype(np.int64)


def _accuracy(logits: np.ndarray, labels) -> float:
    return float((logits.argmax(axis=1) == np.asarray(labels)).mean())


def _data_digest(rows: list[np.ndarray], labels: np.ndarray) -> str:
    """sha256 of the token ids and labels, in order: a resume must see the same data."""
    h = hashlib.sha256(labels.astype("<i8").tobytes())
    for r in rows:
        h.update(len(r).to_bytes(8, "little"))
        h.update(r.astype("<i8").tobytes())
    return h.hexdigest()


