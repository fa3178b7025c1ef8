from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest

from embcache.storage import FingerprintError, canonical_json, fingerprint, spec


@dataclass(frozen=True)
class Cfg:
    pooling: Literal["mean", "cls", "pooler"] = "mean"
    max_length: int = 128
    dtype: str = "float32"
    layers: tuple[int, ...] = (-1,)
    extra: dict = field(default_factory=dict)


BASE = dict(stage="encode", version=1, config=Cfg(), inputs={"bert_tokens": "a" * 64},
            digests={"weights": "b" * 64, "tokenizer": "c" * 64})


def fp(**changes):
    args = {**BASE, **changes}
    return fingerprint(args["stage"], args["version"], args["config"], args["inputs"], args["digests"])


def test_same_inputs_same_fingerprint():
    assert fp() == fp()
    assert len(fp()) == 64 and int(fp(), 16) >= 0


def test_dict_order_and_container_type_do_not_matter():
    a = fingerprint("s", 1, {"a": 1, "b": {"x": [1, 2], "y": 2}})
    b = fingerprint("s", 1, {"b": {"y": 2, "x": (1, 2)}, "a": 1})
    assert a == b


def test_defaults_are_hashed_not_dropped():
    # A dataclass with defaults hashes like the same values spelled out:
    spelled = {"pooling": "mean", "max_length": 128, "dtype": "float32", "layers": [-1], "extra": {}}
    assert fp() == fp(config=spelled)
    # ...and dropping a default-valued field is a different config (no "omit defaults" shortcut).
    assert fp() != fp(config={k: v for k, v in spelled.items() if k != "dtype"})


@pytest.mark.parametrize("change", [
    dict(stage="encode2"), dict(version=2),
    dict(config=Cfg(pooling="cls")), dict(config=Cfg(max_length=129)), dict(config=Cfg(dtype="float16")),
    dict(config=Cfg(layers=(-2,))), dict(config=Cfg(extra={"k": 1})),
    dict(inputs={"bert_tokens": "d" * 64}), dict(inputs={}),
    dict(digests={"weights": "e" * 64, "tokenizer": "c" * 64}),
    dict(digests={"weights": "b" * 64, "tokenizer": "f" * 64}),
])
def test_any_change_gives_a_new_fingerprint(change):
    assert fp(**change) != fp()


def test_numbers_keep_their_type():
    assert fingerprint("s", 1, {"t": 1}) != fingerprint("s", 1, {"t": 1.0})
    assert fingerprint("s", 1, {"t": np.int64(3)}) == fingerprint("s", 1, {"t": 3})
    assert fingerprint("s", 1, {"t": np.float32(0.5)}) == fingerprint("s", 1, {"t": 0.5})


@pytest.mark.parametrize("bad", [object(), {"f": lambda x: x}, {1: "int key"}, {"x": float("nan")},
                                 {"x": float("inf")}, np.zeros(3)])
def test_unhashable_config_raises_never_random(bad):
    with pytest.raises(FingerprintError):
        fingerprint("s", 1, bad)


def test_bad_stage_or_version_raises():
    with pytest.raises(FingerprintError):
        spec("", 1, {})
    with pytest.raises(FingerprintError):
        spec("s", "1", {})


def test_canonical_json_is_compact_and_sorted():
    assert canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"\\u00e9"],"b":1}'
