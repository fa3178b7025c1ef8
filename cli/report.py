"""`embcache report`: the HTML report of a run, written into the store.

It only reads the store, so it calls the report directly instead of starting a Prefect
flow (the end-to-end flow runs it as its `report` task).
"""

from __future__ import annotations

import typer

from .app import app, out


@app.command()
def report(ctx: typer.Context,
           run: str = typer.Option(None, "--run", help="Run id (runs/RUN_ID.json); default: the newest run."),
           corpus: list[str] = typer.Option(None, "--corpus",
                                            help="Corpus to report (repeat); default: the run's corpora, "
                                                 "else every corpus in the store."),
           open_browser: bool = typer.Option(False, "--open", help="Open the report in a web browser.")):
    """Write an HTML report (with PNGs) into the store: reports/RUN_ID/index.html, or reports/latest/.

    Documents and rejected rows, cache hits and timings per stage, the word2vec loss
    curve and nearest neighbours, the linear head's confusion matrix, a projection of
    the document vectors, and the comparison table; what the store lacks is said.

    Example: `embcache report --corpus bbc --open`
    """
    from ..stages.report import write_report
    where = write_report(ctx.obj["store"], run, corpus or None)
    out.print(f"report: {where}", soft_wrap=True, highlight=False)
    if open_browser:
        import webbrowser
        from pathlib import Path
        url = where if "://" in where else Path(where).as_uri()
        if not webbrowser.open(url):
            out.print("no browser found here: open the file above yourself", highlight=False)
