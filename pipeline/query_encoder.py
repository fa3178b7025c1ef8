"""Query texts encoded without torch or transformers: an ONNX export and the model's tokenizer.json.

    encoder = OnnxQueryEncoder(export, tokenizer_dir, TokenizeConfig(128), EncodeConfig(normalize="l2"))
    encoder(["interest rates rise"])        # (1, H) float32, what encode_tokens gives for the same text

A query is a few texts: importing torch and transformers to encode them cost ~4 s of a
cold `embcache query similar` (issue 27). This runs the same graph, the export that
pipeline/backends.py made of the same safetensors (kept in the store, derived/onnx/), with
ONNX Runtime, and tokenizes with the `tokenizers` library from the model folder's own
tokenizer.json, as transformers' fast tokenizer does underneath. Pooling, normalization,
windows and dtype follow pipeline/encode.py step by step (tests/pipeline/test_query_encoder.py
checks the two agree within 1e-4). What this cannot reproduce exactly returns None from
`load_export` / `OnnxQueryEncoder.usable`, and the caller encodes through torch instead:
no tokenizer.json, torch's int8 quantization, normalize still "auto". ONNX Runtime's int8 per
channel (the demo's setting) runs here too: its quantized file sits beside the plain export,
named by that export's sha256 (`quantized_export`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .configs import EncodeConfig, TokenizeConfig
from .errors import PipelineError

# pipeline/backends.py's export sidecar ({"format", "format_version", "key", "bytes", "sha256",
# "config"}); read here without importing transformers for its config class.
EXPORT_FORMAT = ("embcache.onnx-export", 1)


def onnx_runtime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def load_export(path: str | os.PathLike, key: str) -> dict | None:
    """The model config (a dict) of a valid export at `path` for weights `key`; None if there is
    none, or its sidecar does not match (the file is hashed: checked before every load)."""
    path = Path(path)
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if (meta.get("format"), meta.get("format_version")) != EXPORT_FORMAT or meta.get("key") != key \
            or meta.get("bytes") != size or not isinstance(meta.get("config"), dict):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return meta["config"] if h.hexdigest() == meta.get("sha256") else None


def quantized_export(export: str | os.PathLike) -> Path | None:
    """The int8-channel file pipeline/backends.py (_quantized) made of a valid plain export
    (check it with load_export first), or None when featurize has not made one."""
    export = Path(export)
    try:
        sha = json.loads(export.with_suffix(".json").read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return None
    path = export.with_name(f"{export.stem}-int8-channel-{str(sha)[:16]}.onnx")
    return path if path.is_file() else None


def load_tokenizer_json(model_dir: str | os.PathLike):
    """The model folder's tokenizer.json as a `tokenizers.Tokenizer`, set up as transformers'
    BertTokenizerFast sets it up (tokenizer_config.json's casing options win); None without one."""
    from tokenizers import Tokenizer, normalizers
    root = Path(model_dir)
    if not (root / "tokenizer.json").is_file():
        return None
    tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    try:
        config = json.loads((root / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    state = json.loads(tokenizer.normalizer.__getstate__()) if tokenizer.normalizer is not None else {}
    if state.get("type") == "BertNormalizer":
        want = {"lowercase": config.get("do_lower_case", True), "strip_accents": config.get("strip_accents"),
                "handle_chinese_chars": config.get("tokenize_chinese_chars", True)}
        if any(state.get(k, v) != v for k, v in want.items()):
            tokenizer.normalizer = normalizers.BertNormalizer(clean_text=state.get("clean_text", True), **want)
    return tokenizer


class OnnxQueryEncoder:
    """Texts -> (N, H) float32 vectors with an ONNX export and a tokenizers.Tokenizer; no torch.

    export: the .onnx file; config: its model config (load_export); tokenizer: load_tokenizer_json's.
    """

    def __init__(self, export: str | os.PathLike, config: dict, tokenizer, tok: TokenizeConfig,
                 enc: EncodeConfig, threads: int | None = None):
        if not self.usable(enc):
            raise PipelineError("EncodeConfig", f"the ONNX query path does not reproduce {enc}")
        from .backends import cpu_session           # numpy only at import: no torch here either
        self.session = cpu_session(export, threads)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.hidden = int(config["hidden_size"])
        self.pad_id = config.get("pad_token_id") or 0
        self.tok, self.enc = tok, enc
        self.tokenizer = tokenizer
        tokenizer.no_padding()
        tokenizer.enable_truncation(tok.max_length, stride=0, strategy="longest_first", direction="right")

    @staticmethod
    def usable(enc: EncodeConfig) -> bool:
        """What this path reproduces: float32 weights (or ONNX Runtime's int8 per channel) run in
        float32, normalize already resolved to l2 or none."""
        return enc.quantize in ("none", "int8-channel") and enc.precision == "fp32" \
            and enc.normalize in ("l2", "none")

    def windows(self, texts: list[str]) -> list[list[list[int]]]:
        """Each text's token id windows, as pipeline/tokenize.py keeps them (one under "truncate")."""
        keep = 1 if self.tok.long_documents == "truncate" else self.tok.max_windows or None
        out = []
        for e in self.tokenizer.encode_batch(texts, add_special_tokens=True):
            out.append([e.ids, *(o.ids for o in e.overflowing)][:keep])
        return out

    def __call__(self, texts: list[str]) -> np.ndarray:
        """(N, H) float32, in input order."""
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise PipelineError(f"texts[{bad}]", f"expected str, got {type(texts[bad]).__name__}")
        windows = self.windows(list(texts))
        counts = np.array([len(w) for w in windows], dtype=np.int64)                   # (N,)
        vectors = self._encode([row for w in windows for row in w])                     # (W, H) float32
        if len(counts) and counts.max() > 1:                                            # encode_windows
            starts = np.r_[0, np.cumsum(counts)[:-1]]
            vectors = np.add.reduceat(vectors, starts, axis=0) / counts[:, None].astype(np.float32)
            several = counts > 1
            if self.enc.normalize == "l2":
                norms = np.linalg.norm(vectors[several], axis=1, keepdims=True)
                vectors[several] /= np.maximum(norms, np.finfo(np.float32).tiny)
        return vectors.astype(self.enc.dtype).astype(np.float32)

    def _encode(self, rows: list[list[int]]) -> np.ndarray:
        """pipeline/encode.encode: length-sorted batches within batch_tokens, pooled, normalized."""
        out = np.empty((len(rows), self.hidden), dtype=np.float32)                     # (N, H)
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        order = np.argsort(-lengths, kind="stable")
        start = 0
        while start < len(order):
            take = max(self.enc.batch_tokens // max(int(lengths[order[start]]), 1), 1)
            batch = order[start:start + take]
            start += take
            longest = int(lengths[batch].max())
            ids = np.full((len(batch), longest), self.pad_id, dtype=np.int64)          # (B, T)
            mask = np.zeros((len(batch), longest), dtype=np.int64)                     # (B, T)
            for i, r in enumerate(batch):
                ids[i, :lengths[r]] = rows[r]
                mask[i, :lengths[r]] = 1
            values = dict(zip(self.outputs, self.session.run(self.outputs, {"input_ids": ids,
                                                                             "attention_mask": mask})))
            out[batch] = self._pool(values, mask)
        return out

    def _pool(self, values: dict, mask: np.ndarray) -> np.ndarray:
        if self.enc.pooling == "pooler":
            if "pooler_output" not in values:
                raise PipelineError("EncodeConfig.pooling", "the model has no pooler layer")
            pooled = values["pooler_output"].astype(np.float32)                          # (B, H)
        elif self.enc.pooling == "cls":
            pooled = values["last_hidden_state"][:, 0].astype(np.float32)
        else:
            states = values["last_hidden_state"].astype(np.float32)                     # (B, T, H)
            weights = mask[..., None].astype(np.float32)                                # (B, T, 1)
            pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        if self.enc.normalize == "l2":                                                  # torch's F.normalize
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled
