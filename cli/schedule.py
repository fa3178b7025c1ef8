"""`embcache schedule`: the end-to-end run on a schedule, and the schedules on the Prefect server.

    embcache schedule pipeline.toml --interval 600     # short for `schedule start`: serve it here, warm
    embcache schedule list                             # every schedule: when, paused, served, last and next run
    embcache schedule pause pipeline  ·  resume pipeline  ·  delete pipeline
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..flows.schedule import ScheduleConfig
from .app import out, schedule_app
from .options import option


@schedule_app.command("start")
def start(ctx: typer.Context,
          config: Path = typer.Argument(None, exists=True, dir_okay=False,
                                        help="TOML or YAML run config, re-read by every run "
                                             "(default: the embedded BBC demo)."),
          cron: str = option(ScheduleConfig, "cron", "--cron", help='A cron line, in UTC: "*/15 * * * *".'),
          interval: float = option(ScheduleConfig, "interval", "--interval", help="Seconds between runs."),
          name: str = typer.Option(None, "--name", help="Schedule name, the deployment embcache-run/NAME "
                                                        "(default: the config file's stem, else 'default').")):
    """Run the end-to-end flow on a schedule, in this process, against the Prefect server at $PREFECT_API_URL.

    `embcache schedule CONFIG ...` is short for `embcache schedule start CONFIG ...`. It
    registers the deployment embcache-run/NAME and runs each scheduled run here, one at
    a time, with imports, models and the Prefect client kept warm between runs (each is a
    real flow run in the Prefect UI), printing a line per run: when it started, what it
    computed, how long it took, its report. Each run re-reads the config, ingests its
    sources (globs pick up new and changed files) and computes only what the store lacks.
    A run that comes due while another is working is cancelled; the next one picks up
    what arrived. Relative paths resolve from this directory, as with `embcache run`.
    Ctrl-C (or SIGTERM) stops serving and pauses the schedule.

    Example: `embcache prefect-server` in one shell; in another
    `prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api; embcache schedule pipeline.toml --interval 600`
    """
    from ..flows import runners
    from ..flows.run import load_config
    from ..flows.schedule import check_schedule, serve_schedule, server_for_schedules
    from ..flows.schedule_admin import set_paused
    from .stopping import prompt_stop
    s = ScheduleConfig(name=name or (config.stem if config else "default"),
                       config_path=str(config.resolve()) if config else None,
                       store=ctx.obj["store"] if ctx.obj["store_given"] else None,
                       cron=cron, interval=interval)
    check_schedule(s)
    cfg = load_config(config)                     # errors in the file surface before anything is served
    url = server_for_schedules()
    when = f"cron {cron!r} (UTC)" if cron else f"every {interval:g} s"
    out.print(f"serving [bold]embcache-run/{s.name}[/bold] {when} against {url} · config "
              f"{s.config_path or 'embedded default'} · store {s.store or cfg.store}", highlight=False,
              soft_wrap=True)
    with prompt_stop(before_exit=lambda: set_paused(s.name, True)), runners.session(ctx.obj["runner"] or cfg.runner):
        why = serve_schedule(s, on_run=lambda r: out.print(run_line(r), highlight=False, soft_wrap=True),
                             on_note=lambda note: out.print(note, highlight=False, soft_wrap=True))
    again = " ".join(["embcache schedule", *([str(config)] if config else []), "..."])
    out.print(f"embcache-run/{s.name} was deleted: stopped serving" if why == "deleted" else
              f"stopped serving; embcache-run/{s.name} is paused until served again (`{again}`)",
              highlight=False, soft_wrap=True)


def run_line(r) -> str:
    """One line per scheduled run: start, what it computed, how long, the report.

    10:00:03 crimson-otter completed in 3.1 s: ingest 5 texts · featurize-bert 5 texts · report /s/reports/…
    """
    head = f"{r.started.astimezone():%H:%M:%S} {r.flow_run} {r.state.lower()}"
    if r.state == "CANCELLED" and r.seconds == 0:
        return f"{head}: {r.message}"
    head += f" in {r.seconds:.1f} s"
    if r.record is None:
        return f"{head}: {r.message}" if r.message else head
    computed = [f"{s['stage']} {s['computed']:,} {s['unit']}" for s in r.record.get("stages", [])
                if s.get("computed")]
    if r.record.get("unchanged_since"):
        what = f"nothing changed since run {r.record['unchanged_since']}"
    else:
        what = " · ".join(computed) if computed else "nothing to compute (all from the cache)"
    report = f" · report {r.record['report']}" if r.record.get("report") else ""
    return f"{head}: {what}{report}"


@schedule_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="One JSON object per schedule.")):
    """List the schedules of the end-to-end run on the Prefect server at $PREFECT_API_URL.

    For each: its name, when it runs, whether it is paused, whether a process is serving
    it (it polled for runs lately), its config and store, its last and next run.

    Example: `embcache schedule list`  ·  `embcache schedule list --json`
    """
    from ..flows.schedule import server_for_schedules
    from ..flows.schedule_admin import list_schedules
    url = server_for_schedules()
    found = list_schedules()
    if as_json:
        for info in found:
            print(json.dumps(info.as_dict()))
        return
    if not found:
        out.print(f"no schedules on {url} (`embcache schedule CONFIG --interval SECONDS` makes one)",
                  highlight=False)
        return
    from rich.table import Table
    table = Table("name", "when", "state", "last run (UTC)", "next run (UTC)", box=None, highlight=False)
    for i in found:
        table.add_row(i.name, i.when, ("paused" if i.paused else "active") + (", served" if i.served else ""),
                      i.last_run or "-", f"{i.next_run:%Y-%m-%d %H:%M:%S}" if i.next_run else "-")
    out.print(table)
    out.print("served: a process runs its runs (`embcache schedule CONFIG ...`); --json adds each config and "
              "store", highlight=False, soft_wrap=True)


@schedule_app.command("pause")
def pause(name: str = typer.Argument(..., help="The schedule's name (embcache-run/NAME).")):
    """Pause a schedule: the server makes no more runs of it until it is resumed.

    A process serving it keeps waiting and says so. Example: `embcache schedule pause pipeline`
    """
    _set_paused(name, True)


@schedule_app.command("resume")
def resume(name: str = typer.Argument(..., help="The schedule's name (embcache-run/NAME).")):
    """Resume a paused schedule (a process must serve it: `embcache schedule CONFIG ...`).

    Example: `embcache schedule resume pipeline`
    """
    _set_paused(name, False)


@schedule_app.command("delete")
def delete(name: str = typer.Argument(..., help="The schedule's name (embcache-run/NAME).")):
    """Delete a schedule (the deployment embcache-run/NAME); a process serving it stops.

    Runs already made stay in the store and in Prefect's history. Example: `embcache schedule delete pipeline`
    """
    from ..flows.schedule import server_for_schedules
    from ..flows.schedule_admin import delete_schedule
    server_for_schedules()
    info = delete_schedule(name)
    out.print(f"deleted embcache-run/{info.name} ({info.when})", highlight=False)


def _set_paused(name: str, paused: bool) -> None:
    from ..flows.schedule import server_for_schedules
    from ..flows.schedule_admin import set_paused
    server_for_schedules()
    info = set_paused(name, paused)
    served = "" if info.served else " (no process is serving it: `embcache schedule CONFIG ...` runs its runs)"
    out.print(f"embcache-run/{info.name} {'paused' if info.paused else 'resumed'}: {info.when}{served}",
              highlight=False, soft_wrap=True)
