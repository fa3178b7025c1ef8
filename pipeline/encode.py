"""Batched, pooled encoding: token ids in, one vector per text out, in input order.

Texts are sorted by token length and cut into batches of at most `batch_tokens`
padded tokens, so a batch pads only to its own longest row (dynamic padding) and
short texts do not pay for long ones. Each vector depends only on its own text:

>>> vecs = encode([[101, 1037, 4937, 102], [101, 102]], model, EncodeConfig())
>>> vecs.shape, vecs.dtype
((2, 384), dtype('float32'))

Only one batch of activations is alive at a time; the output array (N, H) is the
only thing that grows with N, so callers stream shards of a few thousand texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa
import torch

from .cores import torch_threads
from .devices import precision_of
from .errors import PipelineError
from .model import resolve_normalize
from .tokenize import TokenizeConfig, tokenize
from .configs import EncodeConfig  # noqa: F401  (defined once, in configs.py)



def length_sorted_batches(lengths: Sequence[int] | np.ndarray, batch_tokens: int) -> list[np.ndarray]:
    """Index arrays, longest texts first, each batch within rows × longest ≤ batch_tokens.

    Longest first means a batch that does not fit in memory fails at once, not at
    the end. A text longer than batch_tokens on its own gets a batch of one.

    >>> [b.tolist() for b in length_sorted_batches([3, 9, 4, 8, 2], batch_tokens=16)]
    [[1], [3], [2, 0, 4]]
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)                 # (N,)
    order = np.argsort(-lengths, kind="stable")                               # longest first, ties by index
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)                          # the batch's max: sorted
        rows = max(batch_tokens // longest, 1)
        batches.append(order[start:start + rows])
        start += rows
    return batches


def encode(input_ids: Sequence | pa.Array | pa.ChunkedArray, model: torch.nn.Module,
           config: EncodeConfig) -> np.ndarray:
    """Vectors (N, H) of `config.dtype`, row i for input_ids[i].

    model: a transformers model (on any device, in config.precision: load_model places it),
    or a backends.OnnxModel (the same weights under ONNX Runtime, CPU).
    input_ids: token id sequences with special tokens, e.g. tokenize()'s column.
    Pooled vectors are L2-normalised when config.normalize is "l2" (or "auto" and the
    folder the model was loaded from has a sentence-transformers Normalize module).
    Batches are cut at config.batch_tokens on a CPU and config.gpu_batch_tokens elsewhere;
    on a GPU the pooled rows stay there until the last batch, so no batch waits for a copy.
    """
    rows = id_arrays(input_ids)
    _check_model(model, config)
    unit = normalize_mode(model, config) == "l2"
    hidden = model.config.hidden_size
    out = np.empty((len(rows), hidden), dtype=config.dtype)                   # (N, H)
    if not rows:
        return out
    device = model_device(model)
    budget = config.batch_tokens if device.type == "cpu" else config.gpu_batch_tokens
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    pooled_rows, order = [], []
    with torch_threads(config.threads), torch.inference_mode():
        for batch in length_sorted_batches(lengths, budget):
            ids, mask = pad_batch([rows[i] for i in batch], pad_id)                # (B, T), (B, T)
            if device.type != "cpu":
                ids, mask = ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            pooled = _pool(model(input_ids=ids, attention_mask=mask), mask, config.pooling)  # (B, H) float32
            if unit:                                                          # before the dtype cast
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)  # (B, H), rows of norm 1
            if device.type == "cpu":
                out[batch] = pooled.numpy()                                   # back to input order
            else:
                pooled_rows.append(pooled)
                order.append(batch)
        if pooled_rows:                                                       # one copy back, at the end
            out[np.concatenate(order)] = torch.cat(pooled_rows).cpu().numpy()
    return out


def model_device(model) -> torch.device:
    """Where a model's weights are: a torch module's first parameter; an OnnxModel runs on the CPU."""
    if not isinstance(model, torch.nn.Module):
        return torch.device("cpu")
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def encode_texts(texts: Sequence[str], tokenizer, model: torch.nn.Module,
                 tok_config: TokenizeConfig, enc_config: EncodeConfig) -> np.ndarray:
    """tokenize then encode: (N, H) vectors for N texts (pooled over windows under "windows")."""
    return encode_tokens(tokenize(texts, tokenizer, tok_config), model, enc_config)


def encode_tokens(tokens: pa.Table, model: torch.nn.Module, config: EncodeConfig) -> np.ndarray:
    """(N, H) for tokenize()'s rows: encode(input_ids), or, when the table has windows
    (TokenizeConfig.long_documents="windows"), encode_windows over [input_ids, *more_windows]."""
    if "more_windows" not in tokens.column_names:
        return encode(tokens.column("input_ids"), model, config)
    firsts, more = tokens.column("input_ids").to_pylist(), tokens.column("more_windows").to_pylist()
    return encode_windows([[f, *m] for f, m in zip(firsts, more)], model, config)


def encode_windows(windows: Sequence[Sequence], model: torch.nn.Module, config: EncodeConfig) -> np.ndarray:
    """(N, H): text i's vector is the plain mean of its windows' vectors, each as encode gives it
    (normalised first when encode normalises, and the mean then normalised again).

    All windows of all texts go through encode at once, so they share its length-sorted
    token-budget batches. A text with one window gets exactly the vector encode gives it.
    Plain, not token-weighted: a short last window counts as much as a full one. On BBC
    topics the two differ by one test document in 222 (0.9715 vs 0.9760, truncate 0.9715),
    inside the spread of 3 splits (benchmarks/long_documents.py, BENCHMARKS.md).

    >>> encode_windows([[[101, 1037, 102]], [[101, 1037, 102], [101, 4937, 102]]], model, config).shape
    (2, 384)
    """
    counts = np.fromiter((len(w) for w in windows), dtype=np.int64, count=len(windows))   # (N,)
    if len(counts) and counts.min() < 1:
        raise PipelineError(f"windows[{int(np.argmin(counts))}]", "a text with no window")
    vectors = encode([row for w in windows for row in w], model, replace(config, dtype="float32"))  # (W, H)
    if not len(counts):
        return vectors.astype(config.dtype)
    starts = np.r_[0, np.cumsum(counts)[:-1]]                                 # (N,) each text's first window
    pooled = np.add.reduceat(vectors, starts, axis=0) / counts[:, None].astype(np.float32)   # (N, H)
    several = counts > 1
    if normalize_mode(model, config) == "l2" and several.any():
        norms = np.linalg.norm(pooled[several], axis=1, keepdims=True)       # (M, 1)
        pooled[several] /= np.maximum(norms, np.finfo(np.float32).tiny)
    return pooled.astype(config.dtype)


def quantization_fidelity(fp32: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    """Row-wise cosine between two encodings of the same texts (mean and worst).

    >>> quantization_fidelity(np.eye(2), np.array([[1.0, 0.0], [1.0, 1.0]]))
    {'mean_cosine': 0.853..., 'min_cosine': 0.707..., 'rows': 2}
    """
    a, b = np.asarray(fp32, np.float64), np.asarray(int8, np.float64)        # (N, H) each
    if a.shape != b.shape or a.ndim != 2:
        raise PipelineError("quantization_fidelity", f"shapes differ or are not 2-D: {a.shape} vs {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)             # (N,)
    cos = (a * b).sum(axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)  # (N,)
    return {"mean_cosine": float(cos.mean()) if len(cos) else float("nan"),
            "min_cosine": float(cos.min()) if len(cos) else float("nan"),
            "rows": int(len(cos))}


def _pool(output, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, H) float32 from a model output and its (B, T) attention mask."""
    if pooling == "pooler":
        if getattr(output, "pooler_output", None) is None:
            raise PipelineError("EncodeConfig.pooling", "the model has no pooler layer")
        return output.pooler_output.float()                                   # (B, H)
    states = output.last_hidden_state.float()                                 # (B, T, H)
    if pooling == "cls":
        return states[:, 0]                                                   # (B, H)
    weights = mask.unsqueeze(-1).to(states.dtype)                             # (B, T, 1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, H)


def pad_batch(rows: list[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest row: ids (B, T) int64 and attention mask (B, T)."""
    longest = max(len(r) for r in rows)
    ids = np.full((len(rows), longest), pad_id, dtype=np.int64)               # (B, T)
    mask = np.zeros((len(rows), longest), dtype=np.int64)                     # (B, T)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def id_arrays(input_ids) -> list[np.ndarray]:
    """Each text's ids as an int64 array; accepts lists, arrays and Arrow list columns."""
    if isinstance(input_ids, pa.ChunkedArray):
        input_ids = input_ids.combine_chunks()
    if isinstance(input_ids, pa.Array):
        if input_ids.null_count:
            raise PipelineError("input_ids", f"{input_ids.null_count} null rows")
        input_ids = input_ids.to_numpy(zero_copy_only=False)                  # object array of arrays
    rows = [np.asarray(r, dtype=np.int64).reshape(-1) for r in input_ids]
    empty = next((i for i, r in enumerate(rows) if len(r) == 0), None)
    if empty is not None:
        raise PipelineError(f"input_ids[{empty}]", "empty token sequence (tokenize adds special tokens)")
    return rows


def normalize_mode(model: torch.nn.Module, config: EncodeConfig) -> str:
    """config.normalize as encode applies it: "auto" is decided by the folder the model was
    loaded from (transformers records it as config._name_or_path); a model built in memory
    has none, so auto means none. Planned runs pass l2 or none (stages/bert.plan_bert)."""
    if config.normalize != "auto":
        return config.normalize
    source = getattr(model.config, "_name_or_path", "") or ""
    return resolve_normalize("auto", source) if source else "none"


def _check_model(model: torch.nn.Module, config: EncodeConfig) -> None:
    """The config must say what the model is (quantization, precision), or the fingerprint would lie."""
    if not isinstance(model, torch.nn.Module):                # a backends.OnnxModel says what it is
        if model.quantize != config.quantize:
            raise PipelineError("EncodeConfig.quantize", f"config says {config.quantize!r} but the "
                                                         f"ONNX model is {model.quantize!r}")
        if config.precision != "fp32":
            raise PipelineError("EncodeConfig.precision", f"{config.precision} runs on torch; ONNX is fp32")
        return
    quantized = any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
    if quantized != (config.quantize == "int8"):
        raise PipelineError("EncodeConfig.quantize", f"config says {config.quantize!r} but the model "
                                                     f"is {'int8' if quantized else 'not'} quantized")
    weights = {precision_of(p.dtype) for p in model.parameters() if p.is_floating_point()}
    if weights and weights != {config.precision}:
        raise PipelineError("EncodeConfig.precision", f"config says {config.precision!r} but the model's "
                                                      f"weights are {', '.join(sorted(weights))} "
                                                      f"(load_model(precision=…))")
