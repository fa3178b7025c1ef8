"""The `embcache` app and every command group, with the helpers their commands share.

One module per group registers its commands by importing this one (cli/store.py,
cli/query.py, cli/ingest.py, cli/featurize.py, cli/train.py, cli/evaluate.py,
cli/predict.py, cli/export.py, cli/run.py, cli/report.py, cli/prefect_server.py,
cli/schedule.py); cli/main.py imports them all. Nothing here imports a command module, so there is no import loop.

Store and query commands never import Prefect (fast startup); pipeline commands check
their arguments, then start Prefect (`prefect_api`) and import their flows. An error a
user can act on is one red `error:` line and an exit code from `EXIT` (the README's
table), never a traceback. Global options (--store, -v, --runner, ...) may also follow
the command: `embcache verify --store s` is `embcache --store s verify`.

    embcache status --json
    embcache query sql "SELECT count(*) FROM bert_features"
    embcache verify
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from contextlib import contextmanager

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from ..flows.errors import ConfigError, FlowError
from ..flows.runners import RunnerConfig
from ..pipeline.errors import PipelineError
from ..storage import FeatureStore, StoreError, default_root
from ..storage.errors import InvalidName, QueryRefused
from . import options
from .help import ConventionalHelp
from .options import option

# Prefect's server telemetry writes to its SQLite database while the temporary server is
# still migrating it ("database is locked" tracebacks on a fresh PREFECT_HOME), and this
# machine has no network for it anyway. The user's own setting wins.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Exit codes of every command: README "Exit codes" shows this table (tests/cli/test_exit_codes.py checks both).
EXIT = {
    0: "success",
    1: "damage found: `verify` or `status` (damaged or missing files), `repair` / `verify --repair` "
       "(something could not be repaired; named on stderr)",
    2: "usage: an option, argument, name, SQL statement, source path, column, model or run config that cannot "
       "be used "
       "(one line names the flag, file and what was found; checked before anything runs where it can be)",
    3: "`ingest` finished, but some rows were rejected (counts per reason are printed)",
    4: "store: no store at --store, or a missing, locked or damaged table, corpus, model or key",
    5: "run: a flow, task runner or Prefect server failed",
    6: "system: the operating system refused (no space, permission denied, read-only file system)",
    70: "internal error: a bug in embcache (the traceback is printed; please report it)",
    130: "interrupted (Ctrl-C)",
}
EXIT_VERIFY_FAILED, EXIT_USAGE, EXIT_REJECTED, EXIT_STORE, EXIT_RUN, EXIT_SYSTEM, EXIT_INTERNAL = 1, 2, 3, 4, 5, 6, 70

# what a command may raise for a user to read, and its exit code (first match wins)
USER_ERRORS = ((PipelineError, EXIT_USAGE), (ConfigError, EXIT_USAGE), (InvalidName, EXIT_USAGE),
               (QueryRefused, EXIT_USAGE), (StoreError, EXIT_STORE), (FlowError, EXIT_RUN), (OSError, EXIT_SYSTEM))

out = Console()
err = Console(stderr=True)


def exit_code(e: BaseException) -> int | None:
    """The EXIT code of an error a user can act on; None for anything else (a bug).

    A store error caused by a full, read-only or forbidden disk is the system's refusal (6).
    """
    from ..flows.retry import FINAL_ERRNOS
    cause = e
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in FINAL_ERRNOS:
            return EXIT_SYSTEM
        cause = cause.__cause__ or cause.__context__
    for kind, code in USER_ERRORS:
        if isinstance(e, kind):
            return code
    return None


def fail(e: Exception, code: int) -> typer.Exit:
    from rich.markup import escape
    err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)   # "[head]" is text
    return typer.Exit(code)


class Command(ConventionalHelp, TyperCommand):
    """Every command: help in click's conventions (cli/help.py)."""


class Group(ConventionalHelp, TyperGroup):
    """Every command group below the root."""


class GroupWithDefault(Group):
    """A group whose arguments go to its default command when the first names none of its own:
    `embcache schedule pipeline.toml --interval 600` is `embcache schedule start pipeline.toml ...`.

    Only an option or something that looks like a path (it exists, or has a suffix or a
    slash) goes there; any other unknown word is click's "No such command".
    """
    default_command = "start"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            first = args[0]
            if first.startswith("-") or os.path.exists(first) or "/" in first or os.path.splitext(first)[1]:
                args = [self.default_command, *args]
        return super().parse_args(ctx, args)


class Commands(ConventionalHelp, TyperGroup):
    """The root command: global options anywhere, and one line and an exit code per user error."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, hoist_global_options(self, ctx, list(args)))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:               # `embcache ... | head`: the reader left; say nothing more
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as e:
            code = exit_code(e)
            if code is None:
                if isinstance(e, (typer.Exit, typer.Abort)) or type(e).__module__.startswith(("click", "typer")):
                    raise
                import traceback
                traceback.print_exc()
                raise fail(RuntimeError(f"internal error ({type(e).__name__}): this is a bug in embcache, "
                                        "please report it with the traceback above"), EXIT_INTERNAL) from None
            raise fail(e, code) from None


def hoist_global_options(root: TyperGroup, ctx, args: list[str]) -> list[str]:
    """`args` with the root's options that follow the command moved before it.

    `embcache verify --store s -v` parses as `embcache --store s -v verify`. Stops at `--`.
    No command has an option of the same name (tests/cli/test_app.py checks).
    """
    takes_value, names = set(), set()
    for param in root.get_params(ctx):
        if param.name == "help":                   # `embcache verify -h` is verify's help
            continue
        for name in (*param.opts, *param.secondary_opts):
            names.add(name)
            if not (getattr(param, "is_flag", False) or getattr(param, "count", False)):
                takes_value.add(name)
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":    # global options before the command
        i += 2 if args[i] in takes_value else 1
    if i >= len(args) or args[i] not in root.commands:
        return args
    rest, hoisted, j = args[i + 1:], [], 0
    while j < len(rest) and rest[j] != "--":
        if rest[j].split("=", 1)[0] in names:
            width = 2 if rest[j] in takes_value else 1       # "--store s"; "--store=s" and flags are one
            hoisted += rest[j:j + width]
            del rest[j:j + width]
        else:
            j += 1
    return args[:i] + hoisted + [args[i]] + rest


class Typer(typer.Typer):
    """typer.Typer whose commands' options bound to Literal fields offer exactly their values,
    and whose help follows click's conventions."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("cls", Group)
        super().__init__(*args, **kwargs)

    def command(self, *args, **kwargs):
        kwargs.setdefault("cls", Command)
        register = super().command(*args, **kwargs)
        return lambda command: register(options.annotate(command))

    def callback(self, *args, **kwargs):
        register = super().callback(*args, **kwargs)
        return lambda command: register(options.annotate(command))


app = Typer(cls=Commands, help="embcache: a cached feature store for text embeddings.", no_args_is_help=True,
            epilog="Exit codes: " + " · ".join(f"{code} {what.split(':')[0].split(' (')[0]}"
                                               for code, what in EXIT.items()),
            rich_markup_mode="markdown", pretty_exceptions_enable=False,
            context_settings={"help_option_names": ["-h", "--help"]})
query_app = Typer(help="Query cached features: SQL, by id, nearest neighbours.", no_args_is_help=True)
featurize_app = Typer(help="Precompute features into the store (only what is missing).", no_args_is_help=True)
train_app = Typer(help="Train models from the cache (never recomputing features).", no_args_is_help=True)
evaluate_app = Typer(help="Evaluate trained models.", no_args_is_help=True)
export_app = Typer(help="Export from the store to standard formats.", no_args_is_help=True)
schedule_app = Typer(cls=GroupWithDefault, no_args_is_help=True,
                     help="The end-to-end run on a schedule; the schedules on the Prefect server.\n\n"
                          "`embcache schedule CONFIG --interval S` (short for `schedule start`) serves one "
                          "in this process; list, pause, resume and delete manage them on the server at "
                          "$PREFECT_API_URL.")
for group, name in ((query_app, "query"), (featurize_app, "featurize"), (train_app, "train"),
                    (evaluate_app, "evaluate"), (export_app, "export"), (schedule_app, "schedule")):
    app.add_typer(group, name=name)


def store_of(ctx: typer.Context, create: bool = False) -> FeatureStore:
    """The --store of this command; one that does not exist is an error unless the command creates it."""
    store = FeatureStore(ctx.obj["store"])
    return store if create else store.require()


def corpus_store(ctx: typer.Context, corpus: str) -> FeatureStore:
    """The --store of this command, which must hold `corpus` (checked before any flow starts)."""
    store = store_of(ctx)
    store.corpus(corpus).require()
    return store


@contextmanager
def prefect_api(*modules: str):
    """The block's flows run against a Prefect API: a temporary server, or the user's own.

    Enter it after the command has checked its arguments (a mistake is one line, before
    any server starts). The temporary server (flows.temporary_api.TemporaryAPI: Prefect's own, in
    a subprocess) starts while `modules` (flows.<name>, the command's flows and what they
    import: torch, transformers, Prefect) are imported, instead of after them at the first
    flow call (~7 s). With PREFECT_API_URL set, the flows report to that server. A stop
    signal (SIGTERM, Ctrl-C) ends the command within seconds, even mid-shard (cli/stopping.py).
    """
    from ..flows.temporary_api import TemporaryAPI
    from .stopping import prompt_stop
    with prompt_stop(), TemporaryAPI() as api:
        for name in modules:
            importlib.import_module(f"embcache.flows.{name}")
        with api.ready():
            yield


_USER_CONSOLE_LEVEL = os.environ.get("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL")


def prefect_console(verbose: bool) -> None:
    """Prefect's log on stderr: none but CRITICAL by default, INFO and up with -v.

    Only the console handler changes: a user's Prefect server still receives every log.
    Before Prefect is imported the environment sets it (Prefect reads
    PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL when it configures logging); in a process where
    it already is (a test, an API user), the handlers change in place. A level the user
    set in the environment wins unless -v is given.
    """
    level = "INFO" if verbose else (_USER_CONSOLE_LEVEL or "CRITICAL")
    os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = level
    for name in list(logging.root.manager.loggerDict):
        if name == "prefect" or name.startswith("prefect."):
            for handler in logging.getLogger(name).handlers:
                if type(handler).__name__ == "PrefectConsoleHandler":
                    handler.setLevel(level)


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
         verbose: bool = typer.Option(False, "--verbose", "-v",
                                      help="Show Prefect's log of flow and task runs on stderr."),
         version: bool = typer.Option(False, "--version", is_eager=True, callback=show_version,
                                      help="Print embcache's version and exit.")) -> None:
    prefect_console(verbose)
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
