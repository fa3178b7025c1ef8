"""Every compute stage's config, in one light place: frozen dataclasses, a comment on each field.

Ingest's configs live in ingest_configs.py and word2vec's in word2vec_configs.py; all are
re-exported here. Defined once so that the CLI, the run config and the stages take their defaults and
choices from the same place without importing torch. A config names the fields that change
speed but not output in `speed_only`, and fields added after stores existed, with the
value that means the old behaviour, in `added_later`; `output_fields` is what a fingerprint hashes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, is_dataclass
from typing import ClassVar, Literal

from .errors import PipelineError
from .ingest_configs import Format, IngestConfig, Normalization, Source  # noqa: F401  (ingest's configs)
from .word2vec_configs import SGNSConfig, SkipGramConfig, WordConfig  # noqa: F401  (word2vec's configs)

Trainable = Literal["oov", "special", "all", "none"]                             # static rows that train
VectorFormat = Literal["auto", "glove", "word2vec", "word2vec-binary", "fasttext"]  # a static vectors file


def output_fields(config) -> dict:
    """A config's fields that change a stage's output (nested configs too): what fingerprints hash.

    Fields a config lists in its `speed_only` class attribute (threads, batch sizes that
    change no value) are left out, so changing them reuses the cache; so is a field of
    `added_later` at its old-behaviour value, so a new option leaves existing caches valid.

    >>> output_fields(EncodeConfig(batch_tokens=512))
    {'pooling': 'mean', 'normalize': 'auto', 'dtype': 'float32', 'quantize': 'none'}
    """
    skip, later = getattr(config, "speed_only", ()), getattr(config, "added_later", {})
    return {f.name: output_fields(v) if is_dataclass(v) and not isinstance(v, type) else v
            for f in fields(config) if f.name not in skip for v in (getattr(config, f.name),)
            if not (f.name in later and v == later[f.name])}


def _positive(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1
# -- TokenizeConfig (pipeline/tokenize.py) ---------------------------------------------

@dataclass(frozen=True)
class TokenizeConfig:
    max_length: int = 256  # tokens kept per text (per window), special tokens included; the rest is cut
    # truncate: the first max_length tokens; windows: all, as max_length windows, vectors averaged (encode_windows)
    long_documents: Literal["truncate", "windows"] = "truncate"
    max_windows: int = 0   # windows: keep the first k windows per text (0 = all); past them it is cut
    added_later: ClassVar[dict] = {"long_documents": "truncate", "max_windows": 0}   # stores before windows

    def __post_init__(self):
        bad = {"max_length": not _positive(self.max_length),
               "long_documents": self.long_documents not in ("truncate", "windows"),
               "max_windows": not (self.max_windows == 0 or _positive(self.max_windows)  # needs windows
                                   and self.long_documents == "windows")}
        for name in (n for n, b in bad.items() if b):
            raise PipelineError(f"TokenizeConfig.{name}", f"invalid value {getattr(self, name)!r}")


# -- EncodeConfig (pipeline/encode.py) -------------------------------------------------

@dataclass(frozen=True)
class EncodeConfig:
    # encode is batch-invariant within 1e-5; the fp32 backends agree within ~2e-7 (pipeline/backends.py),
    #   and fp32 on a GPU within 1e-4 of the CPU (TF32 stays off): where the work runs changes no value
    speed_only: ClassVar[tuple[str, ...]] = ("batch_tokens", "gpu_batch_tokens", "threads", "backend", "device")
    added_later: ClassVar[dict] = {"precision": "fp32"}     # stores before GPUs keep their fingerprints
    # mean: attention-masked mean of the last hidden states (the default; what
    #   sentence-transformers' MiniLM was trained for); cls: the [CLS] row;
    # pooler: the model's pooler_output (tanh(dense(CLS))). For the packaged MiniLM
    #   the pooler was never trained, so its vectors are not sentence embeddings.
    pooling: Literal["mean", "cls", "pooler"] = "mean"
    # applied to each pooled vector, before the dtype conversion:
    # auto: what the model folder's sentence-transformers pipeline (modules.json) does: l2 if it
    #   lists a `sentence_transformers.models.Normalize` module (the packaged MiniLM does), else
    #   none. Resolved against the folder before hashing (resolve_normalize), so a fingerprint
    #   holds l2 or none, never auto;
    # l2: divide by the Euclidean norm (unit vectors: dot product = cosine);
    # none: the pooled vector as it is.
    normalize: Literal["auto", "l2", "none"] = "auto"
    # dtype of the returned vectors; pooling and normalising run in float32 whatever the precision.
    dtype: Literal["float32", "float16"] = "float32"
    # padded tokens per batch (rows × longest row) on a CPU: bounds activation memory. 2048 measured
    #   fastest on 2 cores (benchmarks/encode.py: 216 sentences/s vs 143 at 16384).
    batch_tokens: int = 2048
    # the same on a GPU, where small batches leave it idle between kernel launches.
    gpu_batch_tokens: int = 65536
    # torch intra-op threads for the forward pass; None = the cores this process may use.
    threads: int | None = None
    # "int8": the model was loaded with dynamic int8 Linear layers (load_model(quantize=…)), CPU only;
    # "int8-channel": ONNX Runtime's dynamic int8 MatMuls with a scale per weight column (onnx
    #   extra): mean cosine to fp32 0.99 where int8's is 0.94 (benchmarks/encode.py, BENCHMARKS.md).
    #   Recorded here so the fingerprint changes with it; encode checks it matches the model.
    quantize: Literal["none", "int8", "int8-channel"] = "none"
    # what runs the forward pass: torch, or onnx (ONNX Runtime on the model exported from the
    #   same safetensors; extra `onnx`), float32 on CPU only. auto: on a CPU at fp32 with
    #   onnxruntime installed, whichever of the two ran this corpus's batches faster on this
    #   machine (measured once, kept in the store: stages/backend_choice.py); else torch.
    #   int8 runs on torch, int8-channel on onnx.
    backend: Literal["auto", "torch", "onnx"] = "auto"
    # where torch runs the model: auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda,
    #   cuda:N, mps. Resolved in the process that encodes (each Dask worker: its own GPU).
    device: str = "auto"
    # the weights' and activations' type in the forward pass: fp32; bf16 or fp16 (the model cast
    #   to it, as transformers' dtype= does: for GPUs; bf16 also on CPUs with bf16 units).
    #   MiniLM on BBC: mean cosine to fp32 0.9999+ for both (tests/pipeline/test_encode.py).
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    def __post_init__(self):
        checks = {
            "backend": self.backend in ("auto", "torch", "onnx")
                       and not (self.backend == "onnx" and self.quantize == "int8")
                       and not (self.backend == "torch" and self.quantize == "int8-channel")
                       and not (self.backend == "onnx" and self.precision != "fp32"),
            "pooling": self.pooling in ("mean", "cls", "pooler"),
            "normalize": self.normalize in ("auto", "l2", "none"),
            "dtype": self.dtype in ("float32", "float16"),
            "batch_tokens": _positive(self.batch_tokens),
            "gpu_batch_tokens": _positive(self.gpu_batch_tokens),
            "threads": self.threads is None or _positive(self.threads),
            "quantize": self.quantize in ("none", "int8", "int8-channel"),
            "device": isinstance(self.device, str) and DEVICE_PATTERN.fullmatch(self.device) is not None,
            "precision": self.precision in ("fp32", "bf16", "fp16")
                         and not (self.precision != "fp32" and self.quantize != "none"),
        }
        for name, ok in checks.items():
            if not ok:
                raise PipelineError(f"EncodeConfig.{name}", f"invalid value {getattr(self, name)!r}"
                                    + _HINTS.get(name, ""))


# device spellings torch takes for BERT here (pipeline/devices.py resolves them)
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")
_HINTS = {"device": " (auto, cpu, cuda, cuda:N or mps)",
          "precision": " (fp32, bf16 or fp16; bf16/fp16 do not combine with --quantize)",
          "backend": " (onnx runs fp32 only; int8 runs on torch, int8-channel on onnx)"}


# -- HeadConfig (pipeline/heads.py) ----------------------------------------------------

@dataclass(frozen=True)
class HeadConfig:
    speed_only: ClassVar[tuple[str, ...]] = ("threads",)
    # 0: one Linear(H, C) (softmax regression); > 0: Linear(H, hidden) → ReLU → Dropout → Linear(hidden, C).
    hidden: int = 0
    # dropout on the raw input features (as BertForSequenceClassification on the pooled output
    #   before its classifier), and after the ReLU when hidden > 0. Needs optimizer "adam":
    #   L-BFGS's line search needs a deterministic loss.
    dropout: float = 0.0
    # lbfgs: full-batch L-BFGS with a strong-Wolfe line search, one iteration per epoch (measured
    #   fastest to sklearn's optimum, module docstring); adam: torch Adam on shuffled mini-batches
    #   of batch_size rows, one pass per epoch (for dropout, or hidden layers on large data).
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    # adam's step size. lbfgs does not use it: its line search chooses every step.
    lr: float = 3e-3
    # 1/C of sklearn's LogisticRegression: the loss is mean cross-entropy + (weight_decay / 2n)·Σ w²
    #   over the weights as applied to the raw features (biases free), n = training rows. 1.0 is
    #   sklearn's default objective; standardize and precondition change how fast it is reached,
    #   not what it is.
    weight_decay: float = 1.0
    # rows per adam step; lbfgs always uses all training rows.
    batch_size: int = 1024
    # upper bound on epochs (lbfgs iterations, adam passes).
    max_epochs: int = 100
    # stop after this many epochs without an improvement of the validation loss; the head
    #   keeps the weights of the last improving epoch.
    patience: int = 5
    # an improvement lowers the best validation loss by more than this (absolute); stops
    #   lbfgs once it only polishes digits that no longer change predictions.
    min_delta: float = 1e-4
    # balanced: class c's loss weight is n_samples / (n_classes * count_c), sklearn's
    #   compute_class_weight("balanced"), on both the training and the validation loss.
    class_weights: Literal["none", "balanced"] = "none"
    # subtract the training rows' mean and divide by their std per feature (kept in the head
    #   as buffers, so it is saved with it and applied to raw features at prediction).
    standardize: bool = True
    # train the first layer's weight W as V @ P, P^-2 ≈ the objective's curvature (feature covariance
    #   from ≤ 16,384 training rows plus the penalty). Speed only: the objective and the saved W are
    #   the same; lbfgs needs 2-5x fewer epochs on correlated BERT features (module docstring).
    precondition: bool = True
    # seeds initialization, shuffling and dropout: same seed, data and threads → identical weights.
    seed: int = 0
    # torch intra-op threads while training; None = the cores this process may use.
    threads: int | None = None

    def __post_init__(self):
        number = (int, float)
        checks = {
            "hidden": isinstance(self.hidden, int) and self.hidden >= 0,
            "dropout": isinstance(self.dropout, number) and 0.0 <= self.dropout < 1.0,
            "optimizer": self.optimizer in ("lbfgs", "adam"),
            "lr": isinstance(self.lr, number) and self.lr > 0,
            "weight_decay": isinstance(self.weight_decay, number) and self.weight_decay >= 0,
            "batch_size": isinstance(self.batch_size, int) and self.batch_size >= 1,
            "max_epochs": isinstance(self.max_epochs, int) and self.max_epochs >= 1,
            "patience": isinstance(self.patience, int) and self.patience >= 1,
            "min_delta": isinstance(self.min_delta, number) and self.min_delta >= 0,
            "class_weights": self.class_weights in ("none", "balanced"),
            "standardize": isinstance(self.standardize, bool),
            "precondition": isinstance(self.precondition, bool),
            "seed": isinstance(self.seed, int) and self.seed >= 0,
            "threads": self.threads is None or (isinstance(self.threads, int) and self.threads >= 1),
        }
        for name, ok in checks.items():
            if not ok:
                raise PipelineError(f"HeadConfig.{name}", f"invalid value {getattr(self, name)!r}")
        if self.dropout > 0 and self.optimizer != "adam":
            raise PipelineError("HeadConfig.dropout", f"dropout {self.dropout} needs optimizer='adam': "
                                                      f"L-BFGS's line search needs a deterministic loss")


# -- StaticConfig (pipeline/static.py) -------------------------------------------------

@dataclass(frozen=True)
class StaticConfig:
    speed_only: ClassVar[tuple[str, ...]] = ("threads",)
    # rows that train; every other row stays its pretrained (or random) start, bit for bit.
    #   oov: rows without a pretrained vector (<unk>, specials, corpus OOV words);
    #   special: <unk> + the declared specials; all: every row but <pad>; none: no row.
    trainable: Trainable = "oov"
    # mean: masked mean of the word vectors -> dropout -> Linear (fast, strong on topics);
    #   cnn: Conv1d per kernel size + ReLU + masked max over time -> dropout -> Linear (Kim 2014).
    encoder: Literal["mean", "cnn"] = "mean"
    # declared tokens with their own trainable-if-"special" rows (e.g. "<num>"), after <unk>.
    specials: tuple[str, ...] = ()
    # corpus occurrences a pretrained word needs to get a row (others map to <unk>).
    min_count: int = 1
    # corpus occurrences a word without a pretrained vector needs: rarer ones map to <unk>
    #   (a once-seen word's random row mostly memorizes its one document).
    oov_min_count: int = 2
    # keep every pretrained word as a row, not only the corpus's (GloVe 6B: 400 k × H in the model).
    keep_all_pretrained: bool = False
    # words kept per document (the first ones); longer documents are cut.
    max_tokens: int = 256
    # cnn: window widths in words, one Conv1d each.
    kernel_sizes: tuple[int, ...] = (3, 4, 5)
    # cnn: filters per kernel size; the classifier sees len(kernel_sizes) * cnn_filters features.
    cnn_filters: int = 100
    # dropout on the document vector, before the Linear layer (BBC, mean, frozen rows:
    #   0.0 -> 95.5%, 0.2 -> 94.8%, 0.5 at lr 3e-3 -> 94.2% test accuracy).
    dropout: float = 0.2
    # AdamW step size. BBC + GloVe 50d: mean still improves at epoch 30 with 1e-3 (91.5%)
    #   and 3e-3; cnn reaches 95.5% by epoch 5 at 1e-2 (38 s) and epoch 12 at 3e-3 (89 s).
    lr: float = 1e-2
    # AdamW decoupled weight decay on the trainable parameters (never on frozen rows: not parameters).
    weight_decay: float = 0.01
    # documents per step.
    batch_size: int = 32
    # most passes over the training documents (the mean encoder on BBC: best epoch 27-29 of 30).
    epochs: int = 30
    # stop after this many epochs without a lower validation loss, keeping the best epoch's
    #   weights; None: run all epochs (and still keep the best, when there is validation data).
    patience: int | None = 3
    # seeds the random rows, the layer init, the shuffling and dropout: same seed, same model.
    seed: int = 0
    # torch intra-op threads while training/predicting; None = the cores this process may use.
    #   1 by default: a step's tensors are small, so threads gain little (BBC mean, quiet 2-core
    #   machine: oov 2.5 s at 1 thread, 3.4 s at 2; all 10 s, 6.7 s), and on a busy machine every
    #   op waits for a descheduled thread (oov at 2 threads there: 149 s).
    threads: int | None = 1

    def __post_init__(self):
        object.__setattr__(self, "specials", tuple(self.specials))
        object.__setattr__(self, "kernel_sizes", tuple(self.kernel_sizes))
        pos = _positive
        checks = {
            "trainable": self.trainable in ("oov", "special", "all", "none"),
            "encoder": self.encoder in ("mean", "cnn"),
            "specials": all(isinstance(s, str) and s for s in self.specials),
            "min_count": pos(self.min_count), "oov_min_count": pos(self.oov_min_count),
            "max_tokens": pos(self.max_tokens),
            "kernel_sizes": bool(self.kernel_sizes) and all(map(pos, self.kernel_sizes)),
            "cnn_filters": pos(self.cnn_filters), "dropout": 0.0 <= self.dropout < 1.0,
            "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0,
            "batch_size": pos(self.batch_size), "epochs": pos(self.epochs),
            "patience": self.patience is None or pos(self.patience),
            "seed": isinstance(self.seed, int), "threads": self.threads is None or pos(self.threads),
        }
        for name, ok in checks.items():
            if not ok:
                raise PipelineError(f"StaticConfig.{name}", f"invalid value {getattr(self, name)!r}")


# -- FinetuneConfig (pipeline/finetune.py) ---------------------------------------------

@dataclass(frozen=True)
class FinetuneConfig:
    speed_only: ClassVar[tuple[str, ...]] = ("threads", "checkpoint_every", "device")
    # phase 1 passes over the cached pooler vectors (train_frozen_head).
    freeze_epochs: int = 3
    # phase 2 passes over the token ids (finetune).
    unfreeze_epochs: int = 2
    # phase 2 trains the top K layers of encoder.layer plus pooler and classifier; the
    #   embeddings and lower layers stay frozen (requires_grad False). None = everything.
    unfreeze_layers: int | None = None
    # phase 1 AdamW step size, constant: only one linear layer trains, on fixed inputs.
    head_lr: float = 1e-3
    # phase 2 peak AdamW step size (BERT's fine-tuning range is 2e-5 to 5e-5).
    lr: float = 3e-5
    # phase 2 documents per step; each batch is padded to its own longest row.
    batch_size: int = 32
    # phase 1 vectors per step (a step costs one (B, H) x (H, C) matmul).
    head_batch_size: int = 64
    # AdamW decoupled weight decay on matrices; biases and LayerNorm weights get none.
    weight_decay: float = 0.01
    # clip the global gradient norm of the trained parameters to this; 0 = no clipping.
    max_grad_norm: float = 1.0
    # phase 2 lr: "linear" rises over the first warmup_fraction of all steps, then falls
    #   linearly towards 0 at the last step (BERT's recipe); "constant" is lr throughout.
    schedule: Literal["linear", "constant"] = "linear"
    # share of phase 2 steps spent warming up (linear schedule only).
    warmup_fraction: float = 0.1
    # phase 2 checkpoints every this many steps, besides each epoch end; 0 = epoch ends only.
    checkpoint_every: int = 0
    # seeds the epoch orders and dropout masks (the new head's init is load_classifier's).
    seed: int = 0
    # torch intra-op threads; None = the cores this process may use.
    threads: int | None = None
    # where both phases train: auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda, cuda:N, mps.
    device: str = "auto"

    def __post_init__(self):
        def count(v, least):
            return isinstance(v, int) and not isinstance(v, bool) and v >= least

        checks = {
            "freeze_epochs": count(self.freeze_epochs, 0),
            "unfreeze_epochs": count(self.unfreeze_epochs, 0),
            "unfreeze_layers": self.unfreeze_layers is None or count(self.unfreeze_layers, 0),
            "head_lr": isinstance(self.head_lr, (int, float)) and self.head_lr > 0,
            "lr": isinstance(self.lr, (int, float)) and self.lr > 0,
            "batch_size": count(self.batch_size, 1),
            "head_batch_size": count(self.head_batch_size, 1),
            "weight_decay": isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0,
            "max_grad_norm": isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm >= 0,
            "schedule": self.schedule in ("linear", "constant"),
            "warmup_fraction": isinstance(self.warmup_fraction, (int, float))
                               and 0 <= self.warmup_fraction < 1,
            "checkpoint_every": count(self.checkpoint_every, 0),
            "seed": count(self.seed, 0),
            "threads": self.threads is None or count(self.threads, 1),
            "device": isinstance(self.device, str) and DEVICE_PATTERN.fullmatch(self.device) is not None,
        }
        for name, ok in checks.items():
            if not ok:
                raise PipelineError(f"FinetuneConfig.{name}", f"invalid value {getattr(self, name)!r}")
