"""`embcache predict`: labels for a corpus from a saved head, encoding only what is not cached."""

from __future__ import annotations

import json

import typer

from ..flows.run_config import HeadStage
from .app import app, out, runs_flows, store_of
from .options import option
from .progress import progress_bars


@app.command()
@runs_flows("train_flows")
def predict(ctx: typer.Context,
            corpus: str = typer.Argument(..., help="An ingested corpus (labels not needed)."),
            head: str = option(HeadStage, "name", "--head", help="A saved head."),
            as_json: bool = typer.Option(False, "--json")):
    """Predict labels with a saved head; encodes only documents whose features are not cached.

    Example: `embcache ingest inbox ./new-docs && embcache predict inbox --head topics`
    """
    from ..flows.train_flows import predict_flow
    with progress_bars():
        r = predict_flow(corpus, head, store=store_of(ctx).root)
    if as_json:
        print(json.dumps(r))
        return
    out.print(f"{r['documents']:,} documents: {r['encoded']:,} encoded now, {r['cached']:,} from the cache; "
              f"predictions@{r['predictions'][:12]}")
    out.print(", ".join(f"{k}: {v:,}" for k, v in sorted(r["label_counts"].items())))
