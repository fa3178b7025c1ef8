"""`embcache predict`: labels for a corpus from a saved head, encoding only what is not cached."""

from __future__ import annotations

import json

import typer

from ..flows.run_config import HeadSection
from .app import app, corpus_store, out, prefect_api
from .options import option
from .progress import progress_bars


@app.command()
def predict(ctx: typer.Context,
            corpus: str = typer.Argument(..., help="An ingested corpus (labels not needed)."),
            head: str = option(HeadSection, "name", "--head", help="A saved head."),
            as_json: bool = typer.Option(False, "--json")):
    """Predict labels with a saved head; encodes only documents whose features are not cached.

    Example: `embcache ingest inbox ./new-docs --format files && embcache predict inbox --head topics`
    """
    store = corpus_store(ctx, corpus)
    store.models.require("head", head)
    with prefect_api("train_flows"), progress_bars():
        from ..flows.train_flows import predict_flow
        r = predict_flow(corpus, head, store=store.root)
    if as_json:
        print(json.dumps(r))
        return
    out.print(f"{r['documents']:,} documents: {r['encoded']:,} encoded now, {r['cached']:,} from the cache; "
              f"predictions@{r['predictions'][:12]}")
    out.print(", ".join(f"{k}: {v:,}" for k, v in sorted(r["label_counts"].items())))
