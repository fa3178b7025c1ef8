"""`embcache prefect-server`: a Prefect server with its UI on loopback, for runs, logs and schedules.

(`embcache serve` is another thing: the HTTP server that answers queries over a store.)
`embcache server`, its old name, still works and says so.
"""

from __future__ import annotations

import sys

from ..flows.prefect_server import PrefectServerConfig
from .app import app, err, out
from .options import option

HOST_HELP = "Address to listen on; loopback only, unless --allow-remote."
PORT_HELP = "Port for the API and the UI."
REMOTE_HELP = ("Allow a non-loopback --host. The Prefect server has no authentication: anyone who can reach "
               "the port can read flow logs and parameters and trigger or cancel runs. Use only on a "
               "trusted network.")


@app.command("prefect-server")
def prefect_server(host: str = option(PrefectServerConfig, "host", help=HOST_HELP),
                   port: int = option(PrefectServerConfig, "port", help=PORT_HELP),
                   allow_remote: bool = option(PrefectServerConfig, "allow_remote", "--allow-remote",
                                               help=REMOTE_HELP)):
    """Start a Prefect server with its UI on loopback; stay in the foreground until Ctrl-C.

    It prints the UI URL and Prefect's own line for pointing commands at it,
    `prefect config set PREFECT_API_URL=...`: with it set, the flows, tasks and logs of
    other `embcache` commands show up in the UI, and `embcache schedule` keeps its
    schedules there (`prefect config unset PREFECT_API_URL` goes back to a temporary
    server per command). Its database is Prefect's ($PREFECT_HOME, default ~/.prefect).

    Example: `embcache prefect-server --port 4200`, then in another shell
    `prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api; embcache run pipeline.toml`
    """
    serve_prefect(PrefectServerConfig(host=host, port=port, allow_remote=allow_remote))


@app.command("server", hidden=True)
def server(host: str = option(PrefectServerConfig, "host", help=HOST_HELP),
           port: int = option(PrefectServerConfig, "port", help=PORT_HELP),
           allow_remote: bool = option(PrefectServerConfig, "allow_remote", "--allow-remote", help=REMOTE_HELP)):
    """The old name of `embcache prefect-server` (deprecated; it will be removed).

    Example: `embcache prefect-server --port 4200`
    """
    err.print("note: `embcache server` is now `embcache prefect-server` (the old name will be removed)",
              highlight=False, soft_wrap=True)
    serve_prefect(PrefectServerConfig(host=host, port=port, allow_remote=allow_remote))


def serve_prefect(config: PrefectServerConfig) -> None:
    from ..flows.prefect_server import UNSET_ADVICE, api_url_advice, configured_api_url, run_server

    def announce(s):
        out.print(f"\n[bold]Prefect server ready[/bold]: UI {s.url}  ·  API {s.api_url}", highlight=False,
                  soft_wrap=True)
        out.print("Point embcache (and Prefect) at it; flows, tasks and logs then show up in the UI:",
                  highlight=False)
        print(f"    {api_url_advice(s.api_url)}")
        out.print(f"({UNSET_ADVICE} goes back to a temporary server per command.) Ctrl-C stops the server.",
                  highlight=False)
        sys.stdout.flush()

    run_server(config, announce)
    out.print("Prefect server stopped.", highlight=False)
    try:
        still = configured_api_url()
    except Exception:      # noqa: BLE001 - a hint only: a broken profile must not turn a clean stop into an error
        still = None
    if still and still.rstrip("/") == f"{_api_url(config)}".rstrip("/"):
        out.print(f"PREFECT_API_URL still names it: commands will fail to reach it until it runs again "
                  f"or `{UNSET_ADVICE}`.", highlight=False, soft_wrap=True)


def _api_url(config: PrefectServerConfig) -> str:
    from ..flows.network import base_url
    return f"{base_url(config.host, config.port)}/api"
