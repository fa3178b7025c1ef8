"""The versioned file format of a classification head (pipeline/heads.py): two files in the store.

    head.safetensors   weights and standardization buffers (safetensors: nothing is unpickled)
    head.json          what they mean: format, version, config, labels, feature fingerprint, metrics

>>> files = head_to_bytes(head, {"labels": list(labels.names), "feature_fingerprint": fp})
>>> head, meta = head_from_bytes(files, expected_feature_fingerprint=fp)   # HeadMismatch if fp differs
"""

from __future__ import annotations

import json
from dataclasses import asdict

import safetensors.torch

from .errors import PipelineError
from .formats import json_header
from .heads import Head, HeadConfig

FORMAT, FORMAT_VERSION = "embcache.head", 1
RESERVED_META = ("format", "format_version", "config", "num_labels", "feature_dim", "standardize")


class HeadMismatch(PipelineError):
    """A saved head meets features it was not trained on (another model, pooling or dtype)."""


def head_to_bytes(head: Head, meta: dict) -> dict[str, bytes]:
    """{"head.safetensors": weights and standardization buffers, "head.json": what they mean}.

    meta must hold "labels" (num_labels names, index order) and "feature_fingerprint" (the
    feature table's fingerprint); any other JSON-able keys (metrics, corpus) are kept as given.
    """
    if not isinstance(head, Head):
        raise PipelineError("head_to_bytes", f"expected a Head from train_head, got {type(head).__name__}")
    clash = sorted(set(meta) & set(RESERVED_META))
    if clash:
        raise PipelineError("head_to_bytes.meta", f"keys {clash} are written by head_to_bytes itself")
    labels, fingerprint = meta.get("labels"), meta.get("feature_fingerprint")
    if not isinstance(labels, (list, tuple)) or len(labels) != head.num_labels \
            or not all(isinstance(n, str) for n in labels):
        raise PipelineError("head_to_bytes.meta", f"'labels' must be {head.num_labels} strings, got {labels!r}")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise PipelineError("head_to_bytes.meta", "'feature_fingerprint' must be a non-empty string")
    doc = {**meta, "format": FORMAT, "format_version": FORMAT_VERSION, "config": asdict(head.config),
           "num_labels": head.num_labels, "labels": list(labels), "feature_dim": head.feature_dim,
           "standardize": {"enabled": head.config.standardize,
                           "tensors": [f"{name}.{t}" for name, layer in head.named_children()
                                       if layer is head.input_layer for t in ("mean", "scale")]}}
    try:
        text = json.dumps(doc, sort_keys=True, indent=1, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise PipelineError("head_to_bytes.meta", f"not JSON-serializable: {err}") from err
    tensors = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
    return {"head.safetensors": safetensors.torch.save(tensors), "head.json": text.encode("utf-8")}


def head_from_bytes(files: dict[str, bytes], expected_feature_fingerprint: str | None = None) -> tuple[Head, dict]:
    """(head in eval mode, head.json as a dict) from head_to_bytes's files.

    Refuses another format or version, and raises HeadMismatch when expected_feature_fingerprint
    is given and is not the fingerprint of the features the head was trained on.
    """
    missing = sorted({"head.json", "head.safetensors"} - set(files))
    if missing:
        raise PipelineError("head files", f"missing {missing}")
    meta = json_header(files["head.json"], "head.json", FORMAT, FORMAT_VERSION, "a classification head")
    saved = meta.get("feature_fingerprint")
    if expected_feature_fingerprint is not None and saved != expected_feature_fingerprint:
        raise HeadMismatch("head.json", f"head was trained on features {str(saved)[:12]}, not on these "
                                        f"features {expected_feature_fingerprint[:12]}: features of another "
                                        f"model/config; retrain the head on them")
    try:
        head = Head(int(meta["feature_dim"]), int(meta["num_labels"]), HeadConfig(**meta["config"]))
        head.load_state_dict(safetensors.torch.load(files["head.safetensors"]))
    except (KeyError, TypeError, ValueError, RuntimeError, safetensors.SafetensorError) as err:
        raise PipelineError("head files", f"cannot rebuild the head: {err}") from err
    return head.eval(), meta
