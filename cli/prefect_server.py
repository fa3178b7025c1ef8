"""`embcache server` (a Prefect server with its UI, on loopback) and `embcache schedule`
(the end-to-end flow served on a cron line or an interval against it)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..flows.serve import ScheduleConfig, ServerConfig
from .app import app, out
from .options import option


@app.command()
def server(host: str = option(ServerConfig, "host", help="Address to listen on; loopback only, unless "
                                                       "--allow-remote."),
           port: int = option(ServerConfig, "port", help="Port for the API and the UI."),
           allow_remote: bool = option(ServerConfig, "allow_remote", "--allow-remote",
                                       help="Allow a non-loopback --host. The Prefect server has no "
                                            "authentication: anyone who can reach the port can read "
                                            "flow logs and parameters and trigger or cancel runs. "
                                            "Use only on a trusted network.")):
    """Start a Prefect server with its UI on loopback; stay in the foreground until Ctrl-C.

    It prints the UI URL and the `export PREFECT_API_URL=...` line: with it set, the flows,
    tasks and logs of other `embcache` commands show up in the UI, and `embcache schedule`
    can serve against it. Its database is Prefect's ($PREFECT_HOME, default ~/.prefect).

    Example: `embcache server --port 4200`, then in another shell
    `export PREFECT_API_URL=http://127.0.0.1:4200/api; embcache run pipeline.toml`
    """
    from ..flows.serve import run_server

    def announce(s):
        out.print(f"\n[bold]Prefect server ready[/bold]: UI {s.url}  ·  API {s.api_url}", highlight=False,
                  soft_wrap=True)
        out.print("In other shells, point embcache at it (flows, tasks and logs then show up in the UI):",
                  highlight=False)
        print(f"    export PREFECT_API_URL={s.api_url}")
        out.print("Ctrl-C stops the server.", highlight=False)
        sys.stdout.flush()

    run_server(ServerConfig(host=host, port=port, allow_remote=allow_remote), announce)
    out.print("Prefect server stopped.", highlight=False)


@app.command()
def schedule(ctx: typer.Context,
             config: Path = typer.Argument(None, exists=True, dir_okay=False,
                                           help="TOML or YAML run config, re-read by every run "
                                                "(default: the embedded BBC demo)."),
             cron: str = option(ScheduleConfig, "cron", "--cron", help='A cron line, in UTC: "*/15 * * * *".'),
             interval: float = option(ScheduleConfig, "interval", "--interval", help="Seconds between runs."),
             name: str = typer.Option(None, "--name", help="Deployment name: embcache-run/NAME "
                                                           "(default: the config file's stem, else 'default').")):
    """Serve the end-to-end run on a schedule against the Prefect server at $PREFECT_API_URL.

    Each run re-reads the config, ingests its sources (globs pick up new and changed
    files) and computes only what the store lacks. One run at a time: a run that comes
    due while the previous one is still working is cancelled; the next one picks up what
    arrived. Relative paths resolve from this directory, as with `embcache run`. Ctrl-C
    stops serving and pauses the schedule.

    Example: `embcache server` in one shell; in another
    `export PREFECT_API_URL=http://127.0.0.1:4200/api; embcache schedule pipeline.toml --interval 600`
    """
    from ..flows.run import load_config
    from ..flows.serve import api_url_of_server, check_schedule, serve_pipeline
    s = ScheduleConfig(name=name or (config.stem if config else "default"),
                       config_path=str(config.resolve()) if config else None,
                       store=ctx.obj["store"] if ctx.obj["store_given"] else None,
                       cron=cron, interval=interval)
    check_schedule(s)
    cfg = load_config(config)                     # errors in the file surface before anything is served
    url = api_url_of_server()
    when = f"cron {cron!r} (UTC)" if cron else f"every {interval:g} s"
    out.print(f"serving [bold]embcache-run/{s.name}[/bold] {when} against {url} · config "
              f"{s.config_path or 'embedded default'} · store {s.store or cfg.store}", highlight=False,
              soft_wrap=True)
    serve_pipeline(s)
