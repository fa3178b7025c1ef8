"""The end-to-end commands of the CLI: `embcache run [CONFIG]` and `embcache demo`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .app import app, out, prefect_api
from .progress import progress_bars


def run_pipeline(ctx: typer.Context, config: Path | None, as_json: bool, rescan: bool = False,
                 retrain: bool = False) -> dict:
    """Run flows.run.pipeline_flow with progress bars; print the summary and the report path.

    The config and its sources are checked first; then the temporary Prefect server starts
    while the stages import (`prefect_api`).
    """
    from ..flows import runners
    from ..flows.run_config import load_config
    from ..flows.unchanged import unchanged_record
    from ..pipeline.ingest import check_ingest
    from ..pipeline.sources import check_source
    cfg = load_config(config)                       # errors in the file surface before any flow starts
    store = ctx.obj["store"] if ctx.obj["store_given"] else cfg.store
    record = None if rescan or retrain else unchanged_record(cfg, store)   # nothing changed: no Prefect
    if record is None:
        for corpus in cfg.corpora:                  # sources that match nothing or lack a column
            check_ingest(corpus.sources, cfg.ingest)
            for source in corpus.sources:
                check_source(source)
        runner = ctx.obj["runner"] or cfg.runner
        if not runner.address:                      # [bert] device = "cuda" where torch sees none: one line
            from ..stages.bert import encode_device
            encode_device(cfg.encode)
        with prefect_api("featurize_flows", "word2vec_flows", "train_flows", "run"), progress_bars(), \
                runners.session(ctx.obj["runner"] or cfg.runner):             # --runner beats [runner]
            from ..flows.run import pipeline_flow
            record = pipeline_flow(config_path=str(config) if config else None, store=store,
                                   rescan=rescan, retrain=retrain)
    if as_json:
        print(json.dumps(record, default=str))
        return record
    print_summary(record)
    if config is None:                              # the embedded demo: say what it chose for BERT
        from ..flows.run_config import demo_note
        out.print("  " + demo_note(cfg), highlight=False, soft_wrap=True, markup=False)   # "[bert]" is text
    return record


def print_summary(record: dict) -> None:
    out.print(f"\n[bold]embcache run[/bold] {record['run_id']}: {record['status']} in "
              f"{record['wall_seconds']:.1f} s · store {record['store']}")
    for stage in record["stages"]:
        what = ("cached" if stage["skipped"] else
                f"computed {stage['computed']:,} {stage['unit']}, {stage['cached']:,} cached")
        out.print(f"  {stage['stage']:>19} {stage['corpus']:<12} {stage['seconds']:7.1f} s  {what}",
                  highlight=False)
        if stage.get("encoder"):                    # featurize-bert: what encoded (device, precision, backend)
            from .featurize import encoder_line
            out.print("  " + " " * 20 + encoder_line(stage["encoder"]).replace("\n", "\n" + " " * 22),
                      highlight=False, soft_wrap=True, markup=False)
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
def run(ctx: typer.Context,
        config: Path = typer.Argument(None, exists=True, dir_okay=False,
                                      help="TOML or YAML run config (default: the embedded BBC demo)."),
        as_json: bool = typer.Option(False, "--json", help="Print the run record as JSON."),
        rescan: bool = typer.Option(False, "--rescan", help="Read every source file, even those unchanged "
                                                            "since the last ingest."),
        retrain: bool = typer.Option(False, "--retrain", help="Train every training stage whose inputs "
                                                              "changed, whatever its retrain policy.")):
    """Ingest → tokenize → BERT features → word2vec → heads → evaluate → report, computing only what is new.

    Example: `embcache run pipeline.toml`  ·  `embcache run` (BBC news, MiniLM, GloVe, ./embcache-store)
    """
    run_pipeline(ctx, config, as_json, rescan, retrain)


@app.command()
def demo(ctx: typer.Context):
    """`embcache run` on the embedded default (what `make demo` runs). Run it twice: the second computes nothing.

    Example: `embcache demo`  ·  `embcache --store /tmp/s demo`
    """
    run_pipeline(ctx, None, as_json=False)
