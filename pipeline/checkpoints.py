"""Fine-tuning checkpoints as bytes, never pickles: the optimizer's state in safetensors, the
position in checkpoint.json (model weights are a plain safetensors state_dict beside them).

>>> files = {"optimizer.safetensors": optimizer_bytes(opt), ...}
>>> load_optimizer_bytes(fresh_adamw_over_the_same_parameters, files["optimizer.safetensors"])
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .errors import PipelineError
from .formats import json_header

CHECKPOINT_FORMAT = "embcache.finetune_checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "checkpoint.json")


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> bytes:
    """The optimizer state as safetensors: tensors "state.{i}.{name}", param groups in the metadata."""
    state = optimizer.state_dict()
    tensors = {f"state.{i}.{k}": torch.as_tensor(v).detach().to("cpu", copy=True).contiguous()
               for i, s in state["state"].items() for k, v in s.items()}
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
              for g in state["param_groups"]]
    return save_tensors(tensors, metadata={"format": "torch-optimizer-state",
                                           "param_groups": json.dumps(groups)})


def load_optimizer_bytes(optimizer: torch.optim.Optimizer, data: bytes) -> None:
    """Restore what optimizer_bytes saved into an optimizer over the same parameters."""
    meta = _safetensors_metadata(data, "optimizer.safetensors")
    if "param_groups" not in meta:
        raise PipelineError("optimizer.safetensors", "no param_groups in the header metadata")
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
              for g in json.loads(meta["param_groups"])]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in load_tensors(data).items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = tensor
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise PipelineError("optimizer.safetensors", f"does not fit this optimizer: {e}") from e


def read_checkpoint_meta(data: bytes) -> dict:
    """checkpoint.json as a dict, after checking its format name and version."""
    meta = json_header(data, "checkpoint.json", CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "a fine-tuning checkpoint")
    if meta.get("phase") != "unfrozen":
        raise PipelineError("checkpoint.json", f"phase {meta.get('phase')!r}; only 'unfrozen' resumes")
    return meta


def _safetensors_metadata(data: bytes, where: str) -> dict[str, str]:
    """The __metadata__ of a safetensors buffer: 8-byte little-endian header length, JSON header."""
    try:
        size = int.from_bytes(data[:8], "little")
        return json.loads(data[8:8 + size]).get("__metadata__") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise PipelineError(where, f"not a safetensors file: {e}") from e
