"""Store commands: status, verify, repair, gc. They never import Prefect."""

from __future__ import annotations

import json

import typer
from rich.table import Table as RichTable

from .app import EXIT_VERIFY_FAILED, app, err, out, store_of


@app.command()
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """Tables (every fingerprint) and corpora in the store; damaged ones are marked (exit 1).

    A table whose manifest cannot be read, or whose shard files are missing, is listed as
    DAMAGED with the reason; the rest are shown as usual. So is a derived vector index
    whose files changed since they were written. `embcache repair` fixes them.

    Example: `embcache status --json | jq '.tables[] | select(.current)'`
    """
    from ..storage.maintenance import index_damage
    store = store_of(ctx)
    s = store.status()
    s["damaged"] += [{"path": path, "reason": why} for path, why in index_damage(store)]
    damaged = [r for r in s["tables"] + s["corpora"] if r.get("damaged")] + s["damaged"]
    if as_json:
        print(json.dumps(s, indent=1))
        if damaged:
            raise typer.Exit(EXIT_VERIFY_FAILED)
        return
    out.print(f"store [bold]{s['store']}[/bold]")
    t = RichTable("table", "fingerprint", "current", "stage", "rows", "shards", "bytes")
    for r in s["tables"]:
        current = "*" if r["current"] else "?" if r["current"] is None else ""
        t.add_row(r["name"], r["fingerprint"][:12], current, r["stage"] or "",
                  ("[red]DAMAGED[/red]" if not r["shards"] else f"{r['rows']:,} [red]DAMAGED[/red]")
                  if r["damaged"] else f"{r['rows']:,}",
                  str(r["shards"]), f"{r['bytes']:,}")
    out.print(t)
    c = RichTable("corpus", "snapshot", "documents", "created", "tables")
    for r in s["corpora"]:
        documents = "[red]DAMAGED[/red]" if r["damaged"] else f"{r['documents']:,}"
        c.add_row(r["name"], str(r["current_snapshot"]), documents, r["created"] or "", ", ".join(sorted(r["tables"])))
    out.print(c)
    for r in damaged:
        where = r.get("path") or f"{r['name']}" + (f" {r['fingerprint'][:12]}" if "fingerprint" in r else "")
        err.print(f"[red]DAMAGED[/red] {where}: {r.get('damaged') or r.get('reason')}", highlight=False, soft_wrap=True)
    if damaged:
        err.print("run `embcache verify` to check every file, `embcache repair` to fix", highlight=False)
        raise typer.Exit(EXIT_VERIFY_FAILED)


@app.command()
def verify(ctx: typer.Context,
           fix: bool = typer.Option(False, "--repair", help="Then repair what is bad (as `embcache repair`) "
                                                             "and verify again.")):
    """Recompute every shard's checksum and row count; name every bad file (exit 1 if any).

    Derived vector indexes (`embcache index`) are hashed too; `--repair` rebuilds a damaged one.

    With --repair, bad files are then moved aside and dropped from their manifests
    (`embcache repair`); exit 0 when the store verifies afterwards.

    Example: `embcache verify --store ./embcache-store`
    """
    from ..storage.maintenance import verify as run_verify
    store = store_of(ctx)
    report = run_verify(store)
    for path, reason in report.bad:
        err.print(f"[red]BAD[/red] {path}: {reason}", highlight=False, soft_wrap=True)
    out.print(f"checked {report.checked} files: {len(report.bad)} bad")
    if report.bad and fix:
        _run_repair(store, dry_run=False)
        report = run_verify(store)
        for path, reason in report.bad:
            err.print(f"[red]STILL BAD[/red] {path}: {reason}", highlight=False, soft_wrap=True)
        out.print(f"after repair: checked {report.checked} files: {len(report.bad)} bad")
    if report.bad:
        raise typer.Exit(EXIT_VERIFY_FAILED)


@app.command()
def repair(ctx: typer.Context,
           dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be done; change nothing.")):
    """Move damaged files aside and drop them from their manifests, so the next run recomputes them.

    Damaged or missing shards and snapshots leave their manifests (their rows are
    recomputed by the next `featurize` / `ingest`); an unreadable manifest is rebuilt from
    its shard files; a broken current pointer names the newest committed table again.
    Nothing is deleted: files go to damaged/<time>/ under the store, with repair.json.
    Exit 1 if something could not be repaired.

    Example: `embcache repair --dry-run`  ·  `embcache repair`
    """
    if not _run_repair(store_of(ctx), dry_run):
        raise typer.Exit(EXIT_VERIFY_FAILED)


def _run_repair(store, dry_run: bool) -> bool:
    from ..storage.maintenance import rebuild_indexes
    from ..storage.repair import repair as run_repair
    report = run_repair(store, dry_run=dry_run)
    verb = "would repair" if dry_run else "repaired"
    for path, what in report.actions:
        out.print(f"{verb} {path}: {what}", highlight=False, soft_wrap=True)
    rebuilt = rebuild_indexes(store, dry_run=dry_run)        # derived: built again, nothing moved aside
    for path, what in rebuilt:
        out.print(f"{path}: {what}", highlight=False, soft_wrap=True)
    for path, why in report.unrepaired:
        err.print(f"[red]CANNOT REPAIR[/red] {path}: {why}", highlight=False, soft_wrap=True)
    aside = f"; damaged files moved to {report.aside}" if report.aside and not dry_run else ""
    out.print(f"{verb} {len(report.actions) + len(rebuilt)} paths{aside}" if report.actions or rebuilt else "nothing to repair",
              highlight=False)
    return report.ok


@app.command()
def gc(ctx: typer.Context,
       grace: float = typer.Option(3600.0, help="Leave files younger than this many seconds "
                                                "(a commit may be in flight)."),
       dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; remove nothing."),
       keep_unreferenced: bool = typer.Option(False, "--keep-unreferenced",
                                              help="Remove only orphan files, keep every table.")):
    """Remove orphan temp files and shards, and tables nothing references.

    A table is referenced when it is its name's current fingerprint, linked from a
    corpus, or an input of a referenced table.

    Example: `embcache gc --grace 0 --dry-run`
    """
    from ..storage.maintenance import gc as run_gc
    report = run_gc(store_of(ctx), grace_seconds=grace, dry_run=dry_run, unreferenced_tables=not keep_unreferenced)
    verb = "would remove" if dry_run else "removed"
    for p in report.removed:
        out.print(f"{verb} {p}", highlight=False)
    out.print(f"{verb} {len(report.removed)} paths, {report.freed_bytes:,} bytes"
              + (f"; kept {report.kept_young} younger than {grace:g} s" if report.kept_young else ""))
