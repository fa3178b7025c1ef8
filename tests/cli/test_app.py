"""The app itself: --version, -h, help with an example on every command, a light import, errors as one line."""

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

import embcache
from embcache.cli.app import EXIT_STORE
from embcache.cli.main import app

runner = CliRunner()


def commands(command=None, path=()):
    """(path, click command) of every command of the app, groups included, depth first."""
    command = command or typer.main.get_command(app)
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


LEAVES = [path for path, c in commands() if not getattr(c, "commands", None)]


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout == f"embcache {embcache.__version__}\n"


@pytest.mark.parametrize("flag", ["-h", "--help"])
@pytest.mark.parametrize("command", [[], ["query"], ["train", "static"], ["ingest"]])
def test_short_and_long_help(flag, command):
    r = runner.invoke(app, [*command, flag])
    assert r.exit_code == 0 and "Usage:" in r.stdout


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    r = runner.invoke(app, [*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.stdout


def test_the_cli_imports_no_heavy_library():
    """`embcache --help` and the query commands start fast: no torch, Prefect, gensim, sklearn, transformers."""
    code = ("import sys, typer\n"
            "from embcache.cli.main import app\n"
            "typer.main.get_command(app)\n"
            "print(' '.join(m for m in ('torch', 'prefect', 'gensim', 'sklearn', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_a_store_error_is_one_red_line_and_exit_4(tmp_path):
    r = runner.invoke(app, ["--store", str(tmp_path), "query", "features", "bert_features", "--ids", "x"])
    assert r.exit_code == EXIT_STORE and r.stderr.startswith("error: ") and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["status"], ["verify"], ["gc", "--dry-run"], ["query", "sql", "SELECT 1"]])
def test_a_store_that_does_not_exist_is_an_error(tmp_path, args):
    """`status --store /typo` used to print empty tables and exit 0; only commands that create a store accept one."""
    missing = tmp_path / "typo"
    r = runner.invoke(app, ["--store", str(missing), *args])
    assert r.exit_code == EXIT_STORE and "no embcache store here" in r.output and "Traceback" not in r.output, r.output
    assert not missing.exists()                                   # and reading created nothing


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_help_follows_click_conventions(path):
    """Typer 0.29 printed `{corpus}`, `<str>`, `<list[str]>` and a `<bool>` value for every flag."""
    r = runner.invoke(app, [*path, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.stdout and "<str>" not in r.stdout and "<int>" not in r.stdout
    usage = next(line for line in r.stdout.splitlines() if "Usage:" in line)
    assert "{" not in usage
    command = dict(commands())[tuple(path)]
    for param in command.params:
        if param.param_type_name == "argument":
            assert param.name.upper() in usage, usage


def test_query_sql_help_keeps_its_placeholders():
    r = runner.invoke(app, ["query", "sql", "--help"], terminal_width=200)
    assert '"NAME@FP12"' in r.stdout and "corpora.NAME" in r.stdout


def test_no_command_has_an_option_named_like_a_global_one():
    """Global options may follow the command (`verify --store s`): no command may own one of their names."""
    root = typer.main.get_command(app)
    ctx = root.make_context("embcache", ["status"])
    global_names = {n for p in root.get_params(ctx) if p.name != "help" for n in (*p.opts, *p.secondary_opts)}
    for path, command in commands():
        if path:
            own = {n for p in command.params for n in (*p.opts, *p.secondary_opts)}
            assert not own & global_names, (path, own & global_names)
