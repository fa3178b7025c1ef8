"""The app itself: --version, -h, help with an example on every command, a light import, errors as one line."""

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

import embcache
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


def test_a_store_error_is_one_red_line_and_exit_2(tmp_path):
    r = runner.invoke(app, ["--store", str(tmp_path), "query", "features", "bert_features", "--ids", "x"])
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["status"], ["verify"], ["gc", "--dry-run"], ["query", "sql", "SELECT 1"]])
def test_a_store_that_does_not_exist_is_an_error(tmp_path, args):
    """`status --store /typo` used to print empty tables and exit 0; only commands that create a store accept one."""
    missing = tmp_path / "typo"
    r = runner.invoke(app, ["--store", str(missing), *args])
    assert r.exit_code == 2 and "no embcache store here" in r.output and "Traceback" not in r.output, r.output
    assert not missing.exists()                                   # and reading created nothing
