"""Encoder backends: the same safetensors weights run by torch or by ONNX Runtime.

`encode` calls a model as `model(input_ids=…, attention_mask=…)` and reads
`.last_hidden_state` / `.pooler_output`; `OnnxModel` answers that call from an
ONNX Runtime session over the model exported with `torch.onnx.export`, so pooling,
batching and normalization stay the torch path's code. At float32 the two agree within
~2e-7 (tests/pipeline/test_backends.py checks ≤ 1e-4), so the backend is a speed-only
setting (EncodeConfig.speed_only) and never changes a fingerprint.

The export is a derived artifact (STYLE.md habit 10): written once per weights digest
into a cache directory the caller chooses (the stage passes one inside the store),
atomically (temporary name, then os.replace), with a sidecar JSON that names the source
digest and the file's sha256; a file whose sidecar does not match is exported again.
A BERT runs fp32 as one fused graph (_fuse_bert); int8-channel quantizes the plain export.

>>> model = onnx_model(load_torch, key="…weights digest…", cache_dir="store/derived/onnx")  # doctest: +SKIP
>>> encode(ids, model, EncodeConfig(backend="onnx"))                                        # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .cores import available_cores
from .errors import PipelineError

EXPORT_FORMAT = "embcache.onnx-export"
EXPORT_FORMAT_VERSION = 1          # bump when the exported graph's inputs/outputs change
OPSET = 17
INSTALL_HINT = "pip install 'embcache[onnx]'"


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def resolve_backend(backend: str, quantize: str = "none", device: str = "cpu", precision: str = "fp32") -> str:
    """"torch", "onnx", or "measure": what runs the forward pass for these settings.

    device: the resolved device's type ("cpu", "cuda", "mps"). ONNX runs here on the CPU at
    fp32 only, so "auto" is torch on a GPU, at bf16/fp16, with quantize "int8" (torch's
    dynamic Linear layers) or without onnxruntime; "onnx" with "int8-channel" (ONNX Runtime's).
    Otherwise "auto" is "measure": which of the two is faster depends on the machine (on a
    quiet 2-core machine ONNX fp32 ran MiniLM at 0.91x torch on sentences, on a loaded one at
    1.3-1.7x: issue 29), so time_backends times both and the caller keeps the answer.
    """
    if backend not in ("auto", "torch", "onnx"):
        raise PipelineError("EncodeConfig.backend", f"invalid value {backend!r}")
    onnx_possible = device == "cpu" and precision == "fp32" and quantize != "int8"
    if backend == "onnx" and not onnx_possible:
        raise PipelineError("EncodeConfig.backend", f"onnx runs on the CPU at fp32 without quantize='int8', "
                                                    f"not on {device} at {precision} with quantize={quantize!r}")
    if quantize == "int8-channel":
        if backend == "torch" or not onnx_possible:
            raise PipelineError("EncodeConfig.quantize", "int8-channel runs on onnx (the CPU, fp32)")
        if not onnx_available():
            raise PipelineError("EncodeConfig.quantize", f"int8-channel needs onnxruntime: {INSTALL_HINT}")
        return "onnx"
    if backend == "onnx" and not onnx_available():
        raise PipelineError("EncodeConfig.backend", f"onnxruntime is not installed: {INSTALL_HINT}")
    if backend != "auto":
        return backend
    return "measure" if onnx_possible and onnx_available() else "torch"


def time_backends(models: dict, input_ids, config, budget_s: float = 4.0, sample_tokens: int = 4096,
                  rounds: int = 2) -> dict:
    """Seconds each model takes to encode the same sample of `input_ids` (best of `rounds`).

    models: {"torch": a transformers model, "onnx": an OnnxModel, ...}, all under `config`.
    The sample: whole batches of `input_ids` as encode cuts them (config.batch_tokens), spread
    over the length range, about `sample_tokens` padded tokens in all (the corpus's own
    batch shapes: sentences and long documents rank the backends differently). Each model
    first runs the shortest sampled batch untimed (allocations, ONNX Runtime's first run);
    then rounds time each model on the whole sample, the order alternating between rounds,
    until `rounds` are done or `budget_s` has passed (one round at least).

    >>> time_backends({"torch": model, "onnx": onnx}, ids, EncodeConfig())     # doctest: +SKIP
    {'seconds': {'torch': 0.61, 'onnx': 0.66}, 'fastest': 'torch', 'texts': 16, 'tokens': 4096, 'rounds': 2}
    """
    import time

    from .encode import encode, id_arrays, length_sorted_batches
    rows = id_arrays(input_ids)
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    batches = length_sorted_batches(lengths, config.batch_tokens)
    padded = [len(b) * int(lengths[b].max()) for b in batches]                  # tokens each batch costs
    want = max(1, min(len(batches), round(sample_tokens / max(np.mean(padded), 1))))
    picked = sorted({int(i) for i in np.linspace(0, len(batches) - 1, want).round()})
    sample = [rows[i] for k in picked for i in batches[k]]
    shortest = [rows[i] for i in batches[picked[-1]]]
    for model in models.values():
        encode(shortest, model, config)                                        # untimed warm-up
    best = dict.fromkeys(models, float("inf"))
    start, done = time.perf_counter(), 0
    names = list(models)
    while done < rounds and (done == 0 or time.perf_counter() - start < budget_s):
        for name in names if done % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            encode(sample, models[name], config)
            best[name] = min(best[name], time.perf_counter() - t)
        done += 1
    return {"seconds": {k: round(v, 4) for k, v in best.items()}, "fastest": min(best, key=best.get),
            "texts": len(sample), "tokens": int(sum(padded[k] for k in picked)), "rounds": done}


def cpu_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime session on the CPU: every graph optimization, `threads` intra-op threads
    (None: the cores this process may use), one inter-op thread (a BERT's graph is a chain)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or available_cores()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An exported model run by ONNX Runtime, called as encode calls a transformers model.

    config: the transformers config of the weights it was exported from (hidden size,
    pad id, the folder it came from: encode reads them). threads: ONNX Runtime's
    intra-op threads, fixed when the session is made.
    """

    def __init__(self, path: str | os.PathLike, config, threads: int | None = None, quantize: str = "none"):
        self.session = cpu_session(path, threads)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.config = config
        self.path = str(path)
        self.quantize = quantize        # what EncodeConfig.quantize must say (encode checks it)

    def __call__(self, input_ids, attention_mask) -> SimpleNamespace:
        import torch
        feeds = {"input_ids": np.asarray(input_ids, np.int64), "attention_mask": np.asarray(attention_mask, np.int64)}
        values = dict(zip(self.outputs, self.session.run(self.outputs, feeds)))
        return SimpleNamespace(last_hidden_state=torch.from_numpy(values["last_hidden_state"]),   # (B, T, H)
                               pooler_output=torch.from_numpy(values["pooler_output"])           # (B, H)
                               if "pooler_output" in values else None)


def onnx_model(load_torch: Callable[[], object], key: str, cache_dir: str | os.PathLike,
               threads: int | None = None, quantize: str = "none") -> OnnxModel:
    """The ONNX export of the weights named by `key` (e.g. their sha256), exported on first use.

    load_torch: returns the float32 transformers model; called only when the cache has no
    valid export (the config is read from it then, else from the sidecar's copy).
    fp32: for a BERT, the fused graph (`<key>-fused-v1.onnx`, export_onnx(fuse=True)); for
    other models the plain export (`<key>.onnx`).
    quantize "int8-channel": the plain export with ONNX Runtime's dynamic int8 MatMuls, one
    weight scale per output column (cached beside it, keyed by the fp32 file's sha256). It
    quantizes the plain graph, not the fused one: its vectors stay what its tables hold.
    """
    if not onnx_available():
        raise PipelineError("EncodeConfig.backend", f"onnxruntime is not installed: {INSTALL_HINT}")
    cache = Path(cache_dir)
    plain = cache / f"{key}.onnx"
    if quantize == "int8-channel":
        config = _valid_export(str(plain), str(plain.with_suffix(".json")), key)
        if config is None:
            model = load_torch()
            export_onnx(model, plain, key)
            config = model.config
        return OnnxModel(_quantized(plain), config, threads, quantize)
    fused = cache / f"{key}-fused-v{FUSED_VERSION}.onnx"
    for path in (fused, plain):
        config = _valid_export(str(path), str(path.with_suffix(".json")), key)
        if config is not None and (path == fused or getattr(config, "model_type", None) != "bert"):
            return OnnxModel(path, config, threads)
    model = load_torch()
    bert = getattr(model.config, "model_type", None) == "bert"
    export_onnx(model, fused if bert else plain, key, fuse=bert)
    return OnnxModel(fused if bert else plain, model.config, threads)


FUSED_VERSION = 1      # bump when export_onnx(fuse=True)'s graph changes


def _fuse_bert(model, path: Path) -> bool:
    """Export `model` with eager attention and fuse it for ONNX Runtime into `path`; True if fused.

    onnxruntime.transformers' BERT optimizer turns the eager-attention graph into one Attention
    per layer, SkipLayerNormalization (residual add + LayerNorm) twice per layer, BiasGelu and an
    EmbedLayerNormalization (MiniLM: 18 MatMuls left of 42): fewer passes over the activations,
    which is where long documents lose time (benchmarks/profile_encode.py). The torch export
    with SDPA attention fuses no Attention, hence the eager one (on a copy: the caller's model
    keeps its attention). Within ~2e-7 of torch (tests/pipeline/test_backends.py checks 1e-4):
    speed only, like the backend. Where the optimizer fuses fewer Attention nodes than layers,
    `path` holds the eager graph unfused (False).
    """
    import copy
    import warnings

    from onnxruntime.transformers.optimizer import optimize_model
    model = copy.deepcopy(model)
    model.set_attn_implementation("eager")
    _export_graph(model, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused = optimize_model(str(path), model_type="bert", num_heads=model.config.num_attention_heads,
                               hidden_size=model.config.hidden_size, opt_level=0)
    if fused.get_fused_operator_statistics().get("Attention", 0) != model.config.num_hidden_layers:
        return False
    fused.save_model_to_file(str(path))
    return True


def _quantized(fp32: Path) -> Path:
    """ONNX Runtime quantize_dynamic(per_channel=True) of MatMul weights, cached by the source's sha256.

    Per-channel scales are what make int8 usable here: on BBC sentences mean cosine to fp32
    0.993 vs 0.961 with one scale per tensor and 0.94 for torch's dynamic int8 (40-sentence smoke run, BENCHMARKS.md).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    source = _verified(str(fp32), fp32.stat().st_size, fp32.stat().st_mtime)
    path = fp32.with_name(f"{fp32.stem}-int8-channel-{source[:16]}.onnx")
    if not path.exists():
        tmp = path.parent / f".tmp-{uuid.uuid4().hex}.onnx"
        try:
            quantize_dynamic(str(fp32), str(tmp), per_channel=True, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul"])
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def export_onnx(model, path: str | os.PathLike, key: str, fuse: bool = False) -> Path:
    """torch.onnx.export (TorchScript exporter, opset 17, dynamic batch and length) + sidecar, atomically.

    fuse: a BERT's fused graph (_fuse_bert); the sidecar says whether it fused ("fused")."""
    import torch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}.onnx"
    try:
        if fuse:
            fused = _fuse_bert(model, tmp)
        else:
            _export_graph(model, tmp)
            fused = False
        meta = {"format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "key": key,
                "sha256": _sha256(str(tmp)), "bytes": tmp.stat().st_size, "opset": OPSET,
                "torch": torch.__version__, "fused": fused, "config": model.config.to_dict()}
        side_tmp = path.parent / f".tmp-{uuid.uuid4().hex}.json"
        side_tmp.write_text(json.dumps(meta, default=str))
        os.replace(tmp, path)
        os.replace(side_tmp, path.with_suffix(".json"))
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _export_graph(model, path: Path) -> None:
    """torch.onnx.export of `model` to `path`: inputs input_ids, attention_mask; outputs
    last_hidden_state (and pooler_output when the model has a pooler); batch and length dynamic."""
    import warnings

    import torch
    names = ["last_hidden_state"] + (["pooler_output"] if getattr(model, "pooler", None) is not None else [])
    wrapper = _plain_outputs(model, len(names) == 2).eval()
    ids = torch.arange(1, 9).reshape(2, 4) % model.config.vocab_size            # (2, 4) sample ids to trace
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])                             # (2, 4) one padded row
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "last_hidden_state": {0: "batch", 1: "tokens"}, "pooler_output": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")            # tracer notes on constant-folded shape checks
        torch.onnx.export(wrapper, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=names, dynamic_axes={k: axes[k] for k in
                                                            ["input_ids", "attention_mask", *names]},
                          opset_version=OPSET, dynamo=False)


def _plain_outputs(model, pooler: bool):
    """An nn.Module returning plain tensors: torch.onnx.export traces tensors, not ModelOutput."""
    import torch

    class PlainOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            return (out.last_hidden_state, out.pooler_output) if pooler else out.last_hidden_state

    return PlainOutputs()


def _valid_export(path: str, sidecar: str, key: str):
    """The export's transformers config when file and sidecar agree with `key`, else None."""
    try:
        meta = json.loads(Path(sidecar).read_text())
        size = os.path.getsize(path)
    except (OSError, ValueError):
        return None
    if meta.get("format") != EXPORT_FORMAT or meta.get("format_version") != EXPORT_FORMAT_VERSION \
            or meta.get("key") != key or meta.get("bytes") != size \
            or _verified(path, size, os.path.getmtime(path)) != meta.get("sha256"):
        return None
    from transformers import AutoConfig
    config = dict(meta["config"])
    return AutoConfig.for_model(config.pop("model_type"), **config)


@functools.lru_cache(maxsize=16)
def _verified(path: str, size: int, mtime: float) -> str:
    """sha256 of a file, once per process per (path, size, mtime)."""
    return _sha256(path)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
