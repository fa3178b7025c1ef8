"""Where torch runs BERT: a device name resolved against what torch sees, and a precision's dtype.

    resolve_device("auto")     # torch.device("cuda") when torch sees a CUDA GPU, else cpu
    resolve_device("cuda:1")   # PipelineError naming what to install when torch sees no such GPU
    precision_dtype("bf16")    # torch.bfloat16

Resolved where the encoding runs (a Dask worker started with CUDA_VISIBLE_DEVICES=3 sees
its GPU as cuda:0), never when a run is planned: the device is speed-only and no
fingerprint holds it. fp32 stays IEEE fp32 on a GPU (torch leaves TF32 matmuls off unless
told otherwise; `allow_tf32` set by a user's own code would break the 1e-4 agreement).
"""

from __future__ import annotations

import torch

from .configs import DEVICE_PATTERN
from .errors import PipelineError

CUDA_HINT = ("install a CUDA build of torch (pip install torch --index-url "
             "https://download.pytorch.org/whl/cu128, or the build https://pytorch.org/get-started/locally/ "
             "names for your driver)")
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """The torch.device for auto|cpu|cuda|cuda:N|mps, or PipelineError saying why it cannot be used.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if not isinstance(name, str) or DEVICE_PATTERN.fullmatch(name) is None:
        raise PipelineError("device", f"{name!r} is not one of auto, cpu, cuda, cuda:N, mps")
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise PipelineError("device 'mps'", "torch sees no Apple GPU (MPS needs macOS on Apple "
                                                "silicon and a torch build with MPS); use --device cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        why = (f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None else
               f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: check the driver "
               f"(nvidia-smi) and CUDA_VISIBLE_DEVICES")
        raise PipelineError(f"device {name!r}", f"{why}; {CUDA_HINT}, or use --device cpu")
    index = int(name.split(":")[1]) if ":" in name else None
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise PipelineError(f"device {name!r}", f"torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}")
    return torch.device(name)


def precision_dtype(precision: str) -> torch.dtype:
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise PipelineError("precision", f"{precision!r} is not one of fp32, bf16, fp16") from None


def precision_of(dtype: torch.dtype) -> str:
    """The precision name of a floating dtype: precision_of(torch.bfloat16) == "bf16"."""
    return next((name for name, d in PRECISIONS.items() if d == dtype), str(dtype))


def describe(device: torch.device) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H100 80GB HBM3)': for lines people read."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)
