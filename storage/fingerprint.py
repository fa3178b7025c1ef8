"""Fingerprints: the cache keys of the store.

A fingerprint is the sha256 of the canonical JSON of everything that determines a
table's contents: the stage name and version, the full config (defaults included),
the fingerprints of its inputs and digests of model files (computed by whoever
loads the model, e.g. pipeline.model.model_digest: the store only hashes strings).

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Cfg:
...     pooling: str = "mean"
>>> a = fingerprint("encode", 1, Cfg())
>>> a == fingerprint("encode", 1, {"pooling": "mean"})   # defaults count, type does not
True
>>> a == fingerprint("encode", 2, Cfg())                 # a code change bumps the version
False

Unlike HF datasets' fingerprint.py, nothing is dropped because it equals a default
and nothing falls back to a random key: what cannot be hashed raises FingerprintError.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from .errors import FingerprintError



def canonical(value: Any, where: str = "config") -> Any:
    """Turn `value` into plain JSON data with one spelling per meaning; raise if impossible."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return canonical(value.value, where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FingerprintError(where, f"non-finite float {value!r} has no canonical form")
        return float(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Every field, defaults included: a changed default must change the key.
        return {f.name: canonical(getattr(value, f.name), f"{where}.{f.name}")
                for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise FingerprintError(where, f"mapping key {k!r} is not a string")
            out[k] = canonical(v, f"{where}.{k}")
        return out
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [canonical(v, f"{where}{{}}") for v in value]
        return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return canonical(item(), where)
    raise FingerprintError(where, f"cannot hash a value of type {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: dict order and whitespace never change a key."""
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False)


def spec(stage: str, version: int, config: Any, inputs: Mapping[str, str] | None = None,
         digests: Mapping[str, str] | None = None) -> dict:
    """The full description a fingerprint is computed from (stored beside the table)."""
    if not stage or not isinstance(stage, str):
        raise FingerprintError("stage", f"stage name must be a non-empty string, got {stage!r}")
    if not isinstance(version, int) or isinstance(version, bool):
        raise FingerprintError("version", f"stage version must be an int, got {version!r}")
    return canonical({"stage": stage, "version": version, "config": config,
                      "inputs": dict(inputs or {}), "digests": dict(digests or {})})


def fingerprint_of(spec_dict: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(spec_dict).encode("ascii")).hexdigest()


def fingerprint(stage: str, version: int, config: Any, inputs: Mapping[str, str] | None = None,
                digests: Mapping[str, str] | None = None) -> str:
    """sha256 hex of the canonical spec; see the module docstring."""
    return fingerprint_of(spec(stage, version, config, inputs, digests))
