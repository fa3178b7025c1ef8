"""A text classifier on pretrained static word vectors where only chosen rows train.

>>> words, vectors = load_vectors("glove-6b-50d")
>>> config = StaticConfig(trainable="oov", encoder="mean")
>>> vocab = build_vocab(train_tokens + other_tokens, words, config)  # every text it will see
>>> model = build_model(vocab, words, vectors, num_classes=5, config=config)
>>> history = train_static(model, vocab.encode(train_tokens, config.max_tokens), y_train,
...                        vocab.encode(val_tokens, config.max_tokens), y_val, config)
>>> proba = predict_proba(model, vocab.encode(test_tokens, config.max_tokens))  # (N, 5)

Frozen rows are a buffer, not a parameter: no optimizer ever sees them, so AdamW's
weight decay and moments cannot move them (bit-identical after training), and the
optimizer state is (K, H) for the K trainable rows instead of (V, H). Saved as
safetensors + JSON + an Arrow vocabulary (static_to_bytes), never pickled.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from .cores import torch_threads
from .errors import PipelineError
from .formats import json_header
from .vectors import StaticVocab, initial_matrix, vectors_digest
from .configs import StaticConfig, Trainable  # noqa: F401  (defined once, in configs.py)

FORMAT = "embcache.static"
FORMAT_VERSION = 1            # bump when static_to_bytes' files change; static_from_bytes checks it
FILES = ("static.json", "model.safetensors", "vocab.arrow")



@dataclass
class StaticHistory:
    train_loss: list[float] = field(default_factory=list)    # mean cross-entropy per epoch (dropout on)
    val_loss: list[float] = field(default_factory=list)      # per epoch; empty without validation data
    val_accuracy: list[float] = field(default_factory=list)  # per epoch
    best_epoch: int = 0       # 0-based epoch whose weights the model holds now
    seconds: float = 0.0      # wall time of train_static


def build_vocab(token_lists: Sequence[Sequence[str]], words: Sequence[str], config: StaticConfig) -> StaticVocab:
    """StaticVocab.build with the config's specials, min counts and keep_all_pretrained."""
    return StaticVocab.build(token_lists, words, config.specials, config.min_count, config.oov_min_count,
                             config.keep_all_pretrained)


def trainable_rows(vocab: StaticVocab, trainable: Trainable) -> np.ndarray:
    """(K,) int64 ascending rows that train under `trainable`; <pad> (row 0) never does."""
    rows = np.arange(len(vocab))
    if trainable == "oov":
        return rows[(~vocab.pretrained) & (rows > 0)]
    if trainable == "special":
        return rows[1:2 + len(vocab.specials)]
    if trainable == "all":
        return rows[1:]
    if trainable == "none":
        return rows[:0]
    raise PipelineError("trainable", f"must be oov, special, all or none, got {trainable!r}")


class PartialEmbedding(nn.Module):
    """An embedding whose rows `rows` train and all others are a frozen buffer.

    frozen (V, H) buffer, trainable (K, H) parameter (None when K = 0), slot (V,) long:
    slot[r] = index of row r in `trainable`, -1 for a frozen row.
    """

    def __init__(self, matrix: torch.Tensor, rows: np.ndarray | torch.Tensor):
        super().__init__()
        rows = torch.as_tensor(np.sort(np.asarray(rows, dtype=np.int64)))            # (K,) ascending
        vocab_size = matrix.shape[0]
        if rows.numel() and (rows.min() < 1 or rows.max() >= vocab_size or rows.unique().numel() != rows.numel()):
            raise PipelineError("PartialEmbedding.rows", f"must be distinct rows in [1, {vocab_size})")
        slot = torch.full((vocab_size,), -1, dtype=torch.long)
        slot[rows] = torch.arange(rows.numel())
        self.register_buffer("frozen", matrix.detach().to(torch.float32).clone())   # (V, H)
        self.register_buffer("slot", slot)                                            # (V,)
        trainable = nn.Parameter(self.frozen[rows].clone()) if rows.numel() else None  # (K, H)
        self.register_parameter("trainable", trainable)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (...) long -> their rows (..., H)."""
        out = F.embedding(ids, self.frozen)                                           # (..., H)
        if self.trainable is None:
            return out
        slot = self.slot[ids.reshape(-1)]                                             # (N,)
        at = torch.nonzero(slot >= 0).squeeze(1)                                      # (M,) trainable positions
        # the trainable rows go in at their M positions only: the backward pass moves M rows, not N
        mixed = out.reshape(-1, out.shape[-1]).index_copy(0, at, self.trainable.index_select(0, slot[at]))
        return mixed.view(out.shape)

    def bag(self, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """ids (B, T) long, weights (B, T) float -> (B, H): each document's weighted sum of its rows.

        Two fused embedding_bag sums, no (B, T, H) tensor: one over the frozen rows (trainable
        positions weigh 0 there), one over only the positions holding a trainable row, so the
        backward pass reaches those rows alone.
        """
        slot = self.slot[ids]                                                         # (B, T)
        trains = slot >= 0                                                            # (B, T)
        out = F.embedding_bag(ids, self.frozen, mode="sum", per_sample_weights=weights.masked_fill(trains, 0.0))
        if self.trainable is None:
            return out
        counts = trains.sum(1)                                                        # (B,)
        # the selection runs document by document, so document b's positions are bag b
        return out + F.embedding_bag(slot[trains], self.trainable, counts.cumsum(0) - counts, mode="sum",
                                     per_sample_weights=weights[trains])

    def weight(self) -> torch.Tensor:
        """(V, H) the current full matrix: frozen rows with the trainable rows put in."""
        full = self.frozen.detach().clone()
        if self.trainable is not None:
            full[self.slot >= 0] = self.trainable.detach()[self.slot[self.slot >= 0]]
        return full


class StaticClassifier(nn.Module):
    """PartialEmbedding -> mean or CNN document vector -> dropout -> Linear: (B, T) ids -> (B, C) logits."""

    def __init__(self, embedding: PartialEmbedding, num_classes: int, config: StaticConfig,
                 generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise PipelineError("StaticClassifier.num_classes", f"need at least 2 classes, got {num_classes!r}")
        self.config, self.num_classes = config, num_classes
        self.vectors_digest = ""    # of the vectors the frozen rows came from; build_model sets it
        self.embedding = embedding
        dim = embedding.frozen.shape[1]
        if config.encoder == "cnn":
            self.convs = nn.ModuleList(nn.Conv1d(dim, config.cnn_filters, k) for k in config.kernel_sizes)
            dim = config.cnn_filters * len(config.kernel_sizes)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(dim, num_classes)
        for layer in [self.out, *getattr(self, "convs", ())]:   # torch's default init, seeded
            bound = 1.0 / (layer.weight[0].numel() ** 0.5)        # 1 / sqrt(fan_in)
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) long, 0 = <pad> after each document's words -> logits (B, C)."""
        if self.config.encoder == "cnn" and ids.shape[1] < max(self.config.kernel_sizes):
            ids = F.pad(ids, (0, max(self.config.kernel_sizes) - ids.shape[1]))
        mask = ids != 0                                                               # (B, T)
        lengths = mask.sum(1, keepdim=True)                                           # (B, 1)
        if self.config.encoder == "mean":
            doc = self.embedding.bag(ids, mask / lengths.clamp(min=1))                # (B, H): <pad> weighs 0
        else:
            x = self.embedding(ids).transpose(1, 2)                                   # (B, H, T)
            pooled = []
            for k, conv in zip(self.config.kernel_sizes, self.convs):
                h = torch.relu(conv(x))                                               # (B, F, T-k+1)
                # window t is real if it holds no padding, or is the first of a short document;
                # ReLU output is >= 0, so zeroing the rest leaves the max of the real windows.
                t = torch.arange(h.shape[2], device=ids.device)
                real = t.unsqueeze(0) <= (lengths - k).clamp(min=0)                   # (B, T-k+1)
                pooled.append(h.masked_fill(~real.unsqueeze(1), 0.0).amax(2))         # (B, F)
            doc = torch.cat(pooled, 1)                                                # (B, F * len(ks))
        return self.out(self.dropout(doc))


def build_model(vocab: StaticVocab, words: Sequence[str], vectors: np.ndarray, num_classes: int,
                config: StaticConfig) -> StaticClassifier:
    """A seeded StaticClassifier whose rows start from initial_matrix and train per config.trainable."""
    matrix = initial_matrix(vocab, words, vectors, np.random.default_rng(config.seed))          # (V, H)
    embedding = PartialEmbedding(torch.from_numpy(matrix), trainable_rows(vocab, config.trainable))
    model = StaticClassifier(embedding, num_classes, config, torch.Generator().manual_seed(config.seed))
    model.vectors_digest = vectors_digest(words, vectors)
    return model


def pad_ids(ids: Sequence[np.ndarray]) -> torch.Tensor:
    """(B, T) long: the documents' rows left-aligned, 0 (<pad>) after; T = the longest (>= 1)."""
    lengths = np.array([len(a) for a in ids], dtype=np.int64)                         # (B,)
    batch = np.zeros((len(ids), max(lengths.max(initial=0), 1)), dtype=np.int64)
    # a boolean mask fills row by row, so the concatenated documents land in their own rows
    batch[np.arange(batch.shape[1]) < lengths[:, None]] = np.concatenate([np.zeros(0, np.int64), *ids])
    return torch.from_numpy(batch)


def _cut(padded: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(len(rows), T') the documents `rows` of pad_ids' output, cut after their last word (T' >= 1)."""
    ids = padded[rows]                                                                # (b, T)
    used = torch.nonzero(ids.any(0)).flatten()                                        # columns with a word
    return ids[:, :int(used[-1]) + 1 if len(used) else 1]


def train_static(model: StaticClassifier, train_ids: Sequence[np.ndarray], y_train: np.ndarray,
                 val_ids: Sequence[np.ndarray] | None, y_val: np.ndarray | None,
                 config: StaticConfig) -> StaticHistory:
    """AdamW on cross-entropy over shuffled padded batches; early stopping on validation loss.

    The model ends holding the weights of the epoch with the lowest validation loss (the
    last epoch without validation data). Same model, data and config -> same result.
    Only the training fields of `config` are read; the architecture is the model's own.
    """
    start = time.perf_counter()
    y_train = _labels(y_train, len(train_ids), model.num_classes, "y_train")
    has_val = val_ids is not None and len(val_ids) > 0
    if has_val:
        y_val = _labels(y_val, len(val_ids), model.num_classes, "y_val")
    history = StaticHistory()
    train = pad_ids(train_ids)                  # (N, T) once; each batch takes its rows from here
    params = dict(model.named_parameters())
    best, best_loss, since_best = None, float("inf"), 0
    with torch_threads(config.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)                                  # dropout masks
        shuffle = torch.Generator().manual_seed(config.seed)
        # fused: one kernel per step, not a pass per operation (trainable "all": ~5x cheaper steps)
        optimizer = torch.optim.AdamW(params.values(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
        for epoch in range(config.epochs):
            model.train()
            total = 0.0
            for batch in torch.randperm(len(train_ids), generator=shuffle).split(config.batch_size):
                loss = F.cross_entropy(model(_cut(train, batch)), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            history.train_loss.append(total / max(len(train_ids), 1))
            if not has_val:
                history.best_epoch = epoch
                continue
            logits = _logits(model, val_ids, config.batch_size)                        # (N, C)
            history.val_loss.append(F.cross_entropy(logits, y_val).item())
            history.val_accuracy.append((logits.argmax(1) == y_val).float().mean().item())
            if history.val_loss[-1] < best_loss:
                best_loss, since_best, history.best_epoch = history.val_loss[-1], 0, epoch
                best = {name: p.detach().clone() for name, p in params.items()}
            else:
                since_best += 1
                if config.patience is not None and since_best >= config.patience:
                    break
        if best is not None:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(best[name])
    model.eval()
    history.seconds = time.perf_counter() - start
    return history


def predict_proba(model: StaticClassifier, ids: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """(N, C) float32 class probabilities, in the order of `ids` (dropout off)."""
    with torch_threads(model.config.threads):
        return torch.softmax(_logits(model, ids, batch_size), 1).numpy()


def _logits(model: StaticClassifier, ids: Sequence[np.ndarray], batch_size: int) -> torch.Tensor:
    """(N, C) logits in eval mode, batched by length (argsort, batch, put back) to pad little."""
    was_training = model.training
    model.eval()
    padded = pad_ids(ids)                                                                # (N, T)
    order = torch.argsort((padded != 0).sum(1), stable=True)                             # (N,)
    out = torch.empty((len(ids), model.num_classes))
    with torch.no_grad():
        for rows in order.split(batch_size):
            out[rows] = model(_cut(padded, rows))
    model.train(was_training)
    return out


def _labels(y, n: int, num_classes: int, name: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.shape != (n,) or (n and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= num_classes)):
        raise PipelineError(name, f"need {n} integer labels in [0, {num_classes}), got shape {y.shape} {y.dtype}")
    return torch.from_numpy(y.astype(np.int64))



def static_to_bytes(model: StaticClassifier, vocab: StaticVocab, meta: Mapping[str, Any]) -> dict[str, bytes]:
    """{"static.json", "model.safetensors", "vocab.arrow"}: the model, its vocabulary and `meta`.

    static.json holds format/format_version, the config, the class count, the vectors
    digest and `meta` (anything JSON can hold: label names, fingerprints). The weights
    (frozen rows included) are safetensors; the vocabulary an Arrow IPC file.
    """
    from safetensors.torch import save

    if len(vocab) != model.embedding.frozen.shape[0]:
        raise PipelineError("static_to_bytes", f"vocabulary of {len(vocab)} rows for a model of "
                                               f"{model.embedding.frozen.shape[0]}")
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": dataclasses.asdict(model.config),
              "num_classes": model.num_classes, "vectors_digest": model.vectors_digest,
              "vocab_digest": vocab.digest(), "meta": dict(meta)}
    try:
        text = json.dumps(header, indent=1, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise PipelineError("static_to_bytes.meta", f"not JSON: {err}") from None
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, vocab.to_arrow().schema) as writer:
        writer.write_table(vocab.to_arrow())
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    return {"static.json": text.encode(), "model.safetensors": save(weights), "vocab.arrow": sink.getvalue()}


def static_from_bytes(files: Mapping[str, bytes]) -> tuple[StaticClassifier, StaticVocab, dict[str, Any]]:
    """The inverse of static_to_bytes: (model in eval mode, vocabulary, meta); checks the format version."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    missing = [f for f in FILES if f not in files]
    if missing:
        raise PipelineError("static_from_bytes", f"missing files {missing}")
    header = json_header(files["static.json"], "static.json", FORMAT, FORMAT_VERSION, "a static classifier")
    missing = {"config", "num_classes", "vectors_digest", "vocab_digest", "meta"} - header.keys()
    if missing:
        raise PipelineError("static.json", f"missing keys {sorted(missing)}")
    try:
        vocab = StaticVocab.from_arrow(pa.ipc.open_file(pa.py_buffer(files["vocab.arrow"])).read_all())
        weights = load(files["model.safetensors"])
    except (pa.ArrowException, SafetensorError) as err:
        raise PipelineError("static_from_bytes", f"unreadable: {type(err).__name__}: {err}") from None
    if vocab.digest() != header["vocab_digest"]:
        raise PipelineError("vocab.arrow", "vocabulary digest differs from static.json's")
    try:
        config = StaticConfig(**header["config"])
    except TypeError as err:
        raise PipelineError("static.json", f"config does not fit StaticConfig: {err}") from None
    slot = weights["embedding.slot"]
    embedding = PartialEmbedding(weights["embedding.frozen"], torch.nonzero(slot >= 0).flatten().numpy())
    model = StaticClassifier(embedding, header["num_classes"], config, torch.Generator())  # weights load next
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise PipelineError("model.safetensors", f"weights do not fit the config: {err}") from None
    model.vectors_digest = header["vectors_digest"]
    return model.eval(), vocab, header["meta"]

