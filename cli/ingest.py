"""`embcache ingest`: sources into a new snapshot of a corpus (Prefect imported when it runs)."""

from __future__ import annotations

import typer

from ..pipeline.configs import IngestConfig, Source
from .app import EXIT_REJECTED, app, out, prefect_api, store_of
from .options import option
from .progress import progress_bars


@app.command()
def ingest(ctx: typer.Context,
           corpus: str = typer.Argument(..., help="Corpus name (lowercase identifier)."),
           sources: list[str] = typer.Argument(..., help="Files, directories or globs; local, or in an object "
                                                        "store (s3://bucket/news/**/*.jsonl: needs embcache[s3])."),
           fmt: str = option(Source, "format", "--format", help="Source format."),
           text_column: str = option(Source, "text_column", help="Column / JSON field with the text."),
           label_column: str = option(Source, "label_column", help="Column with the label."),
           id_column: str = option(Source, "id_column", help="Column with a document id (default: path and row)."),
           split_column: str = option(Source, "split_column", help="Column with the split (train/test/…)."),
           encoding: str = option(Source, "encoding", help="Text encoding of the files (default UTF-8): any "
                                                          "Python codec name, e.g. cp1252, latin-1, utf-16; "
                                                          "auto: detect each file's (and say what it chose)."),
           labels: str = option(IngestConfig, "labels",
                                help="Declared label set, comma-separated; others are rejected."),
           max_bytes: int = option(IngestConfig, "max_bytes", help="Reject texts above this many UTF-8 bytes."),
           normalization: str = option(IngestConfig, "normalization", help="Unicode normalization."),
           rescan: bool = option(IngestConfig, "rescan", "--rescan",
                                 help="Read every file, even those unchanged (path, size, mtime, inode; "
                                      "an object's ETag or version) since the last ingest.")):
    """Read sources into a new snapshot of CORPUS; bad rows go to the `rejected` table.

    Prints what changed since the last ingest: files (objects) added, edited, removed, and
    unchanged, which are not read again. Exits 3 when rows were rejected (counts per reason
    are printed), 2 when a source cannot be read as given (missing path, no matching file or
    object, a column it lacks, an object store without credentials or its filesystem).

    Example: `embcache ingest bbc ./bbc --format folder`  ·  `embcache ingest reviews 'data/*.csv' --label-column stars`
    """
    from ..pipeline.ingest import check_ingest
    from ..pipeline.sources import check_source
    try:                                      # IngestConfig checks its values with ValueError
        config = IngestConfig(max_bytes=max_bytes, normalization=normalization, rescan=rescan,
                              labels=tuple(x.strip() for x in labels.split(",")) if labels else None)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    srcs = [Source(s, format=fmt, text_column=text_column, label_column=label_column,
                   id_column=id_column, split_column=split_column, encoding=encoding) for s in sources]
    check_ingest(srcs, config)                # options that would have no effect are errors
    for source in srcs:                       # paths that match nothing, columns a file lacks
        check_source(source)
    store = store_of(ctx, create=True)
    with prefect_api("featurize_flows"), progress_bars():
        from ..flows.featurize_flows import ingest_flow
        r = ingest_flow(corpus, srcs, config, store=store.root)
    out.print(f"corpus [bold]{corpus}[/bold] snapshot {r.snapshot}: {r.documents:,} documents "
              f"({r.new_texts:,} new texts), {r.rejected_total:,} rejected of {r.inputs:,} rows")
    out.print(f"  sources: {changes_line(r.changes())}", highlight=False)
    if r.encodings:
        from ..pipeline.decoding import describe
        out.print(f"  encoding auto: {describe(r.encodings)}", highlight=False, soft_wrap=True)
    for reason, n in sorted(r.rejected.items(), key=lambda kv: -kv[1]):
        out.print(f"  rejected {n:>8,}  {reason}")
    if r.rejected_total:
        out.print("  details: embcache query sql \"SELECT source, row, reason, detail FROM rejected "
                  f"WHERE corpus = '{corpus}'\"")
        raise typer.Exit(EXIT_REJECTED)


def changes_line(counts: dict) -> str:
    """What an ingest found changed (stages.source_state COUNTS), as one line:
    "30 files: 2 added, 1 edited, 1 removed, 26 unchanged (not read)"."""
    found = sum(counts[k] for k in ("files_added", "files_edited", "files_unchanged", "files_reread"))
    objects = counts["objects"]
    noun = ("object" if objects == found else "file") + ("" if found == 1 else "s")
    if 0 < objects < found:
        noun += f" ({objects:,} in object stores)"
    line = (f"{found:,} {noun}: {counts['files_added']:,} added, {counts['files_edited']:,} edited, "
            f"{counts['files_removed']:,} removed, {counts['files_unchanged']:,} unchanged (not read)")
    if counts["files_reread"]:
        line += f", {counts['files_reread']:,} unchanged but read again"
    return line
