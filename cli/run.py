"""The end-to-end commands of the CLI: `embcache run [CONFIG]` and `embcache demo`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .app import app, out, runs_flows
from .progress import progress_bars


def run_pipeline(ctx: typer.Context, config: Path | None, as_json: bool) -> dict:
    """Run flows.run.pipeline_flow with progress bars; print the summary and the report path.

    Its commands are `runs_flows`: the temporary Prefect server starts while the stages import.
    """
    from ..flows import runners
    from ..flows.run import load_config, pipeline_flow
    cfg = load_config(config)                       # errors in the file surface before the first flow call
    store = ctx.obj["store"] if ctx.obj["store_given"] else cfg.store
    with progress_bars(), runners.session(ctx.obj["runner"] or cfg.runner):   # --runner beats [runner]
        record = pipeline_flow(config_path=str(config) if config else None, store=store)
    if as_json:
        print(json.dumps(record, default=str))
        return record
    print_summary(record)
    return record


def print_summary(record: dict) -> None:
    out.print(f"\n[bold]embcache run[/bold] {record['run_id']}: {record['status']} in "
              f"{record['wall_seconds']:.1f} s · store {record['store']}")
    for stage in record["stages"]:
        what = ("cached" if stage["skipped"] else
                f"computed {stage['computed']:,} {stage['unit']}, {stage['cached']:,} cached")
        out.print(f"  {stage['stage']:>19} {stage['corpus']:<12} {stage['seconds']:7.1f} s  {what}",
                  highlight=False)
    for corpus, s in record["summary"].items():
        parts = [f"{s['documents']:,} documents", f"{s['rejected']:,} rejected"]
        for key, label in (("head_accuracy", "head accuracy"), ("static_accuracy", "static accuracy"),
                           ("wordsim353", "WordSim353 ρ"), ("analogy_accuracy", "analogies")):
            if s.get(key) is not None:
                parts.append(f"{label} {s[key]:.3f}")
        out.print(f"  [bold]{corpus}[/bold]: " + " · ".join(parts))
    out.print(f"  rows from the cache: {record['rows_cached']:,} · computed now: {record['rows_computed']:,}")
    if record.get("report"):
        out.print(f"  report: [bold]{record['report']}[/bold]")


@app.command()
@runs_flows("featurize_flows", "word2vec_flows", "train_flows", "run")
def run(ctx: typer.Context,
        config: Path = typer.Argument(None, exists=True, dir_okay=False,
                                      help="TOML or YAML run config (default: the embedded BBC demo)."),
        as_json: bool = typer.Option(False, "--json", help="Print the run record as JSON.")):
    """Ingest → tokenize → BERT features → word2vec → heads → evaluate → report, computing only what is new.

    Example: `embcache run pipeline.toml`  ·  `embcache run` (BBC news, MiniLM, GloVe, ./embcache-store)
    """
    run_pipeline(ctx, config, as_json)


@app.command()
@runs_flows("featurize_flows", "word2vec_flows", "train_flows", "run")
def demo(ctx: typer.Context):
    """`embcache run` on the embedded default (what `make demo` runs). Run it twice: the second computes nothing.

    Example: `embcache demo`  ·  `embcache --store /tmp/s demo`
    """
    run_pipeline(ctx, None, as_json=False)
