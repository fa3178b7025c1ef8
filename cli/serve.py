"""`embcache serve`: the query server (embcache/query_server.py) on loopback, in the foreground.

Not `embcache server`, which is Prefect's server and UI (cli/server.py).
"""

from __future__ import annotations

import typer

from ..flows.network import is_loopback, port_in_use
from ..query_server_config import QueryServerConfig
from .app import app, out, store_of
from .options import option


@app.command()
def serve(ctx: typer.Context,
          host: str = option(QueryServerConfig, "host", help="Address to listen on; loopback only, unless --allow-remote."),
          port: int = option(QueryServerConfig, "port", min=1, max=65535, help="Port."),
          allow_remote: bool = option(QueryServerConfig, "allow_remote", "--allow-remote",
                                      help="Allow a non-loopback --host. The server has no authentication: "
                                           "anyone who can reach the port reads the whole store."),
          warm: bool = option(QueryServerConfig, "warm", "--warm/--no-warm",
                              help="Map bert_features and load its encoder before answering."),
          sql_timeout: float = option(QueryServerConfig, "sql_timeout_s", "--sql-timeout", min=0.1,
                                      help="Seconds a SQL statement may run."),
          sql_memory: str = option(QueryServerConfig, "sql_memory_limit", "--sql-memory", help="DuckDB memory limit."),
          sql_max_rows: int = option(QueryServerConfig, "sql_max_rows", "--sql-max-rows", min=1,
                                     help="Most rows a SQL result may have (413 past it)."),
          max_batch: int = option(QueryServerConfig, "max_batch", "--max-batch", min=1,
                                  help="Most queries in one /similar request (413 past it)."),
          max_text_chars: int = option(QueryServerConfig, "max_text_chars", "--max-text-chars", min=1,
                                       help="Most characters in one query text (413 past it).")):
    """Serve the store over HTTP: features by id, similar documents, word neighbours, read-only SQL.

    Models, matrices and indexes load once; new commits are served without a restart.
    OpenAPI docs at /docs. Ctrl-C stops it.

    Example: `embcache serve --port 8765`, then
    `curl 'http://127.0.0.1:8765/features/bert_features?corpus=bbc&ids=tech/001.txt'`
    """
    config = QueryServerConfig(host=host, port=port, allow_remote=allow_remote, warm=warm,
                               sql_timeout_s=sql_timeout, sql_memory_limit=sql_memory, sql_max_rows=sql_max_rows,
                               max_batch=max_batch, max_text_chars=max_text_chars)
    if not allow_remote and not is_loopback(host):
        raise typer.BadParameter(f"{host} is not a loopback address: the server has no authentication, so anyone "
                                 "who can reach it could read the store. Pass --allow-remote to listen there "
                                 "anyway (on a trusted network only)", param_hint="--host")
    if port_in_use(host, port):
        raise typer.BadParameter(f"{host}:{port} is already in use (pick another --port)", param_hint="--port")
    import uvicorn

    import embcache
    from ..query_server import create_app
    store = embcache.open(store_of(ctx).root, recheck_s=config.recheck_s)
    root = store.root
    web = create_app(store, config)
    shown = f"[{host}]" if ":" in host else host
    out.print(f"embcache serve: {root} on http://{shown}:{port} (docs: /docs); Ctrl-C stops it", highlight=False)
    uvicorn.run(web, host=host, port=port, log_level="warning", access_log=False)

