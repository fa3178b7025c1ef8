"""The `embcache` app and every command group, with the helpers their commands share.

One module per group registers its commands by importing this one (cli/store.py,
cli/query.py, cli/ingest.py, cli/featurize.py, cli/train.py, cli/evaluate.py,
cli/predict.py, cli/export.py, cli/run.py, cli/report.py, cli/server.py); cli/main.py
imports them all. Nothing here imports a command module, so there is no import loop.

Store and query commands never import Prefect (fast startup); pipeline commands import
their flows when they run. A store, pipeline, flow or OS error from any command is one
red `error:` line and exit 2 (`Commands.invoke`), never a traceback.

    embcache status --json
    embcache query sql "SELECT count(*) FROM bert_features"
    embcache verify
"""

from __future__ import annotations

import functools
import importlib
import os

import typer
from rich.console import Console
from typer.core import TyperGroup

from ..flows.errors import FlowError
from ..flows.runners import RunnerConfig
from ..pipeline.errors import PipelineError
from ..storage import FeatureStore, StoreError, default_root
from . import options
from .options import option

# Prefect's server telemetry writes to its SQLite database while the temporary server is
# still migrating it ("database is locked" tracebacks on a fresh PREFECT_HOME), and this
# machine has no network for it anyway. The user's own setting wins.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

EXIT_ERROR = 2          # a store or input error (message on stderr)
EXIT_VERIFY_FAILED = 1  # verify found bad files
EXIT_REJECTED = 3       # ingest finished, but some rows were rejected (counts printed per reason)

# what a command may raise for a user to read: one line, exit 2
USER_ERRORS = (StoreError, PipelineError, FlowError, OSError)

out = Console()
err = Console(stderr=True)


def fail(e: Exception, code: int = EXIT_ERROR) -> typer.Exit:
    from rich.markup import escape
    err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)   # "[head]" is text
    return typer.Exit(code)


class Commands(TyperGroup):
    """The root command: catches what every command below it may raise for the user."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            raise fail(e) from None


class Typer(typer.Typer):
    """typer.Typer whose commands' options bound to Literal fields offer exactly their values."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)
        return lambda command: register(options.annotate(command))

    def callback(self, *args, **kwargs):
        register = super().callback(*args, **kwargs)
        return lambda command: register(options.annotate(command))


app = Typer(cls=Commands, help="embcache: a cached feature store for text embeddings.", no_args_is_help=True,
            rich_markup_mode="markdown", pretty_exceptions_enable=False,
            context_settings={"help_option_names": ["-h", "--help"]})
query_app = Typer(help="Query cached features: SQL, by id, nearest neighbours.", no_args_is_help=True)
featurize_app = Typer(help="Precompute features into the store (only what is missing).", no_args_is_help=True)
train_app = Typer(help="Train models from the cache (never recomputing features).", no_args_is_help=True)
evaluate_app = Typer(help="Evaluate trained models.", no_args_is_help=True)
export_app = Typer(help="Export from the store to standard formats.", no_args_is_help=True)
for group, name in ((query_app, "query"), (featurize_app, "featurize"), (train_app, "train"),
                    (evaluate_app, "evaluate"), (export_app, "export")):
    app.add_typer(group, name=name)


def store_of(ctx: typer.Context, create: bool = False) -> FeatureStore:
    """The --store of this command; one that does not exist is an error unless the command creates it."""
    store = FeatureStore(ctx.obj["store"])
    return store if create else store.require()


def runs_flows(*modules: str):
    """A command that runs Prefect flows, on the temporary server it starts as its first act.

    The server (flows.serve.TemporaryAPI: Prefect's own, in a subprocess) starts while
    `modules` (flows.<name>, the command's flows and what they import: torch,
    transformers, Prefect) are imported, instead of after them at the first flow call
    (~7 s). With PREFECT_API_URL set, the flows report to that server and nothing starts.
    """
    def decorate(command):
        @functools.wraps(command)                     # typer reads the options from its signature
        def run_on_temporary_api(*args, **kwargs):
            from ..flows.serve import TemporaryAPI
            with TemporaryAPI() as api:
                for name in modules:
                    importlib.import_module(f"embcache.flows.{name}")
                with api.ready():
                    return command(*args, **kwargs)
        return run_on_temporary_api
    return decorate


def show_version(value: bool) -> None:
    if value:
        import embcache
        print(f"embcache {embcache.__version__}")
        raise typer.Exit()


@app.callback()
def main(ctx: typer.Context,
         store: str = typer.Option(None, "--store", envvar="EMBCACHE_STORE", show_default=False,
                                   help="Store root: a directory or URL (s3://…). "
                                        "Default: $EMBCACHE_STORE or ./embcache-store."),
         runner: str = option(RunnerConfig, "kind", "--runner", default_from_field=False, envvar="EMBCACHE_RUNNER",
                              show_default=False,
                              help="Where featurize tasks run: threads (this process; default) or "
                                   "dask (--dask-address, else a LocalCluster, a process per core)."),
         dask_address: str = option(RunnerConfig, "address", "--dask-address", envvar="EMBCACHE_DASK_ADDRESS",
                                    help="Dask scheduler, e.g. tcp://10.0.0.5:8786 (implies --runner dask)."),
         dask_workers: int = option(RunnerConfig, "workers", "--dask-workers", min=1,
                                    help="Worker processes of the LocalCluster (default: one per core)."),
         version: bool = typer.Option(False, "--version", is_eager=True, callback=show_version,
                                      help="Print embcache's version and exit.")) -> None:
    # store_given: a --store / $EMBCACHE_STORE choice, which overrides a run config's own store;
    # runner: a RunnerConfig when given here (it overrides a run config's [runner]), else None
    if runner == "threads" and (dask_address or dask_workers):
        raise typer.BadParameter("--dask-address and --dask-workers go with --runner dask", param_hint="--runner")
    if dask_address and dask_workers:
        raise typer.BadParameter("a cluster at --dask-address has its own workers", param_hint="--dask-workers")
    dask = runner == "dask" or dask_address or dask_workers
    chosen = RunnerConfig("dask", dask_address, dask_workers) if dask else \
        RunnerConfig() if runner == "threads" else None
    ctx.obj = {"store": store or default_root(), "store_given": store is not None, "runner": chosen}
