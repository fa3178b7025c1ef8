"""WordPiece tokenization with the model's own fast tokenizer: texts in, an Arrow table out.

>>> table = tokenize(["A cat sits.", ""], tokenizer, TokenizeConfig(max_length=4))
>>> table.column("input_ids").to_pylist()    # [CLS] a cat [SEP] (cut) · [CLS] [SEP]
[[101, 1037, 4937, 102], [101, 102]]
>>> table.column("length").to_pylist(), table.column("truncated").to_pylist()
([4, 2], [True, False])

No padding is stored: `encode` pads per batch, to that batch's longest row.

Under `long_documents="windows"` a text keeps every max_length window (the first
`max_windows` when that is set), each with its own special tokens: input_ids is the first
(what "truncate" keeps, so readers of input_ids see the same rows), the rest follow:

>>> table = tokenize(["a cat sits on a mat"], tokenizer, TokenizeConfig(4, "windows"))
>>> table.column("windows").to_pylist(), table.column("more_windows").to_pylist()
([3], [[[101, 7719, 2006, 102], [101, 1037, 13523, 102]]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from .errors import PipelineError
from .configs import TokenizeConfig  # noqa: F401  (defined once, in configs.py)

SCHEMA = pa.schema([
    ("input_ids", pa.list_(pa.int32())),  # token ids with the special tokens ([CLS] … [SEP])
    ("length", pa.int32()),               # len(input_ids), special tokens included
    ("truncated", pa.bool_()),            # the text had more than max_length tokens (windows: than it kept)
])
WINDOW_FIELDS = [                         # under long_documents="windows", after SCHEMA's
    pa.field("windows", pa.int32()),      # windows kept for the text, input_ids included (≥ 1)
    pa.field("more_windows", pa.list_(pa.list_(pa.int32()))),  # windows 2.. (each with special tokens)
]



# Texts per call of the fast tokenizer. With overflow rows on, a long text comes back as
# all of its chunks, so one call over a whole shard holds them all at once: measured on
# 1,600 BBC documents, peak RSS +221 MB in one call, +110 MB at 512, +65 MB at 128.
TEXTS_PER_CALL = 128


def tokenize(texts: Sequence[str], tokenizer, config: TokenizeConfig) -> pa.Table:
    """Batched calls of the fast tokenizer (TEXTS_PER_CALL at a time); rows in input order (see SCHEMA)."""
    _check_fits(tokenizer, config)
    texts = list(texts)
    if not texts:
        return schema(config).empty_table()
    if not all(isinstance(t, str) for t in texts):
        bad = next(i for i, t in enumerate(texts) if not isinstance(t, str))
        raise PipelineError(f"texts[{bad}]", f"expected str, got {type(texts[bad]).__name__}")
    return pa.concat_tables([_tokenize_call(texts[i:i + TEXTS_PER_CALL], tokenizer, config)
                             for i in range(0, len(texts), TEXTS_PER_CALL)])


def _tokenize_call(texts: list[str], tokenizer, config: TokenizeConfig) -> pa.Table:
    # With overflow on, a text longer than max_length comes back as several rows, all
    # mapped to it: its first row is the kept prefix, and more than one row means it
    # was truncated. This asks the tokenizer rather than re-deriving its special tokens.
    enc = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=config.max_length,
                    return_overflowing_tokens=True, return_attention_mask=False,
                    return_token_type_ids=False)
    sample = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)  # (rows,)
    first = np.flatnonzero(np.r_[True, sample[1:] != sample[:-1]])           # (N,) first row per text
    rows_per_text = np.diff(np.r_[first, len(sample)])                        # (N,)
    kept = rows_per_text if config.long_documents == "truncate" or not config.max_windows \
        else np.minimum(rows_per_text, config.max_windows)                    # (N,) windows kept
    ids = [enc["input_ids"][i] for i in first]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int32, count=len(ids))
    offsets = np.r_[0, np.cumsum(lengths, dtype=np.int64)].astype(np.int32)
    values = np.fromiter((t for row in ids for t in row), dtype=np.int32, count=int(offsets[-1]))
    columns = [pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)), pa.array(lengths)]
    if config.long_documents == "truncate":
        return pa.Table.from_arrays([*columns, pa.array(rows_per_text > 1)], schema=SCHEMA)
    more = [enc["input_ids"][f + 1:f + k] for f, k in zip(first.tolist(), kept.tolist())]
    return pa.Table.from_arrays([*columns, pa.array(rows_per_text > kept), pa.array(kept.astype(np.int32)),
                                 pa.array(more, WINDOW_FIELDS[1].type)], schema=schema(config))


def schema(config: TokenizeConfig) -> pa.Schema:
    """tokenize()'s columns: SCHEMA, plus WINDOW_FIELDS under long_documents="windows"."""
    return SCHEMA if config.long_documents == "truncate" else pa.schema([*SCHEMA, *WINDOW_FIELDS])


def _check_fits(tokenizer, config: TokenizeConfig) -> None:
    """max_length must leave room for one real token and fit the model's positions."""
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    if config.max_length <= specials:
        raise PipelineError("TokenizeConfig.max_length", f"{config.max_length} leaves no room beside "
                                                         f"{specials} special tokens")
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and config.max_length > limit:
        raise PipelineError("TokenizeConfig.max_length", f"{config.max_length} exceeds the tokenizer's "
                                                         f"model_max_length {limit}")
