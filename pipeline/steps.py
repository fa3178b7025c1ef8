"""Reproducible training steps, shared by fine-tuning's two phases (pipeline/finetune.py).

Each epoch's order is a pure function of (seed, phase, epoch), and torch's generator is
re-seeded from (seed, phase, global step) before every step, inside a forked generator
state: a run resumed from a checkpoint draws the same batches and dropout masks as a run
never stopped, and the caller's generators are left as they were.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn


@contextmanager
def private_rng(device: torch.device):
    """Re-seeding inside leaves the caller's torch generator(s) as they were."""
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        yield


def reseed(seed: int, phase: int, step: int) -> None:
    """torch's generator from (seed, phase, step): dropout masks survive a resume."""
    torch.manual_seed(int(np.random.SeedSequence([seed, phase, step]).generate_state(1)[0]))


def epoch_batches(n: int, batch_size: int, seed: int, phase: int, epoch: int) -> list[np.ndarray]:
    """A permutation of range(n) that depends only on (seed, phase, epoch), cut into batches."""
    order = np.random.default_rng([seed, phase, epoch]).permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def adamw(named: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """Matrices decay, vectors (biases, LayerNorm weights) do not."""
    decay = [p for _, p in named if p.dim() >= 2]
    rest = [p for _, p in named if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr)


def optimizer_order(optimizer: torch.optim.Optimizer, named: list[tuple[str, nn.Parameter]]) -> list[str]:
    """Parameter names in the optimizer's state index order (groups in turn)."""
    name_of = {id(p): n for n, p in named}
    return [name_of[id(p)] for g in optimizer.param_groups for p in g["params"]]


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: list,
                   max_grad_norm: float) -> None:
    """Backward, clip the gradient norm (0: no clipping), step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm:
        nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
