"""`embcache export vectors`: word vectors in the standard text and binary formats."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from ..stages.word2vec_eval import EXPORT_FORMATS
from .app import export_app, out, store_of

ExportFormat = Literal[EXPORT_FORMATS]      # what stages.word2vec_eval.export writes


@export_app.command("vectors")
def export_vectors(ctx: typer.Context, path: Path = typer.Argument(..., help="Output file."),
                   fmt: ExportFormat = typer.Option("word2vec", "--format"),
                   fingerprint: str = typer.Option(None, help="word_vectors fingerprint (default: current).")):
    """Write word vectors as word2vec text, word2vec binary or GloVe text (all load with gensim).

    Example: `embcache export vectors vectors.bin --format word2vec-binary`
    """
    from ..stages.word2vec_eval import export, keyed_vectors
    kv = keyed_vectors(store_of(ctx), fingerprint)
    export(kv, fmt, path)
    out.print(f"wrote {len(kv):,} vectors ({kv.vector_size} dims, {fmt}) to {path}")
