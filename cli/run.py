"""The end-to-end commands of the CLI: `embcache run [CONFIG]` and `embcache demo`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer

from .app import app, out, prefect_api
from .ingest import changes_line
from .progress import progress_bars

_IMPORTED = time.perf_counter()          # where /proc cannot say when the process started


def process_seconds() -> tuple[float, str]:
    """(seconds this command has run, from when): from its process's start where the system
    says (Linux: /proc/self/stat), else from when the CLI was imported."""
    try:
        with open("/proc/self/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()        # fields 3.. of proc(5)
        started = int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, since boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started, "process start"
    except (OSError, ValueError, IndexError, AttributeError):     # not Linux
        return time.perf_counter() - _IMPORTED, "CLI start"


def run_pipeline(ctx: typer.Context, config: Path | None, as_json: bool, rescan: bool = False,
                 retrain: bool = False) -> dict:
    """Run flows.run.pipeline_flow with progress bars; print the summary and the report path.

    The config and its sources are checked first; then the temporary Prefect server starts
    while the stages import (`prefect_api`). SIGTERM or Ctrl-C stops it within seconds,
    even mid-stage (prefect_api: cli/stopping.py).
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
        runner = ctx.obj["runner"] or cfg.runner      # --runner beats [runner]
        if not runner.address:                      # [bert] device = "cuda" where torch sees none: one line
            from ..stages.bert import encode_device
            encode_device(cfg.encode)
        with prefect_api("featurize_flows", "word2vec_flows", "train_flows", "run"), progress_bars(), \
                runners.session(runner):
            from ..flows.run import pipeline_flow
            record = pipeline_flow(config_path=str(config) if config else None, store=store,
                                   rescan=rescan, retrain=retrain)
    seconds, since = process_seconds()
    if as_json:
        print(json.dumps({**record, "command_seconds": round(seconds, 3), "command_seconds_from": since},
                         default=str))
        return record
    print_summary(record, seconds, since)
    if config is None:                              # the embedded demo: say what it chose for BERT
        from ..flows.run_config import demo_note
        out.print("  " + demo_note(cfg), highlight=False, soft_wrap=True, markup=False)   # "[bert]" is text
    return record


def print_summary(record: dict, command_seconds: float | None = None, since: str = "process start") -> None:
    """The run's lines. Its time: the whole command's (from `since`: imports, Prefect's server,
    the flow, the report) beside the flow's own (the record's wall_seconds, what the report shows)."""
    took = (f"in {command_seconds:.1f} s (this command, from {since}; the run's flow "
            f"{record['wall_seconds']:.1f} s)" if command_seconds is not None
            else f"in {record['wall_seconds']:.1f} s (the run's flow)")
    out.print(f"\n[bold]embcache run[/bold] {record['run_id']}: {record['status']} {took} · "
              f"store {record['store']}", highlight=False, soft_wrap=True)
    for stage in record["stages"]:
        what = ("cached" if stage["skipped"] else
                f"computed {stage['computed']:,} {stage['unit']}, {stage['cached']:,} cached")
        out.print(f"  {stage['stage']:>19} {stage['corpus']:<12} {stage['seconds']:7.1f} s  {what}",
                  highlight=False)
        if stage.get("encoder"):                    # featurize-bert: what encoded (device, precision, backend)
            from .featurize import encoder_line
            out.print("  " + " " * 20 + encoder_line(stage["encoder"]).replace("\n", "\n" + " " * 22),
                      highlight=False, soft_wrap=True, markup=False)
    sources = {stage["corpus"]: stage["sources"] for stage in record["stages"]
               if stage["stage"] == "ingest" and "sources" in stage}
    for corpus, s in record["summary"].items():
        parts = [f"{s['documents']:,} documents", f"{s['rejected']:,} rejected"]
        for key, label in (("head_accuracy", "head accuracy"), ("static_accuracy", "static accuracy"),
                           ("wordsim353", "WordSim353 ρ"), ("analogy_accuracy", "analogies")):
            if s.get(key) is not None:
                parts.append(f"{label} {s[key]:.3f}")
        out.print(f"  [bold]{corpus}[/bold]: " + " · ".join(parts))
        if corpus in sources:
            out.print(f"    sources: {changes_line(sources[corpus])}", highlight=False)
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
