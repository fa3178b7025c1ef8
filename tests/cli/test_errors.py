"""A user's mistake is one line and an exit code from the README's table, before anything starts.

Each case runs the real console script in a subprocess that reports whether Prefect was
imported: a command that checks its arguments first never gets as far as starting a
Prefect server (which used to take ~7 s and print two Prefect tracebacks, 87-89 lines).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from embcache.cli.app import EXIT, EXIT_STORE, EXIT_USAGE
from embcache.cli.main import app
from embcache.storage import FeatureStore

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

PROBE = textwrap.dedent("""
    import sys
    from embcache.cli.main import app
    try:
        app(sys.argv[1:], prog_name="embcache")
    except SystemExit as e:
        print("exit", e.code, "prefect" if "prefect" in sys.modules else "no-prefect")
""")


def embcache(cwd: Path, *args: str) -> tuple[int, str, bool]:
    """(exit code, stderr, whether Prefect was imported) of `embcache ARGS` run in `cwd`."""
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    _, code, prefect = done.stdout.split()[-3:]
    return int(code), done.stderr, prefect == "prefect"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "a.csv").write_text("body,label\nhello world,a\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "run.toml").write_text('[[corpora]]\nname = "news"\nsources = [{path = "inbox/*.jsonl"}]\n')
    return tmp_path


@pytest.mark.parametrize("args, says", [
    (["ingest", "c", "a.csv"], r"a\.csv: no column 'text' \(--text-column.*columns found: 'body', 'label'"),
    (["ingest", "c", "a.csv", "--text-column", "body", "--label-column", "topic"],
     r"no column 'topic' \(--label-column"),
    (["ingest", "c", "missing.csv"], r"missing\.csv: matches no file"),
    (["ingest", "c", "emptydir"], r"emptydir: matches no file"),
    (["ingest", "c", "empty.csv"], r"empty\.csv: no column 'text' \(--text-column.*columns found: none"),
    (["ingest", "c", "a.csv", "--text-column", "body", "--labels", "x,y"], r"--labels .*--label-column"),
    (["run", "run.toml"], r"inbox/\*\.jsonl: matches no file"),
], ids=["column", "label-column", "missing path", "empty directory", "empty file", "labels", "run config"])
def test_a_bad_source_is_one_line_exit_2_before_prefect_starts(files, args, says):
    code, stderr, prefect = embcache(files, "--store", "s", *args)
    assert code == EXIT_USAGE, stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: "), stderr
    assert re.search(says, stderr), stderr
    assert not prefect                          # no server started, no flow imported
    assert not (files / "s").exists()           # and no store was made for nothing


@pytest.mark.parametrize("args", [["featurize", "bert", "nope"], ["featurize", "word2vec", "nope"],
                                  ["train", "head", "nope"], ["train", "static", "nope"],
                                  ["train", "word2vec", "nope"], ["finetune", "nope"], ["compare", "nope"],
                                  ["predict", "nope"]], ids=" ".join)
def test_a_corpus_the_store_lacks_is_a_store_error_before_prefect_starts(tmp_path, args):
    FeatureStore(str(tmp_path / "s")).corpus("other").commit_snapshot(
        pa.table({"doc_id": ["d1"], "text_sha": ["a1"]}))
    code, stderr, prefect = embcache(tmp_path, "--store", "s", *args)
    assert code == EXIT_STORE and "no corpus 'nope'" in stderr and not prefect, stderr
    assert len(stderr.strip().splitlines()) == 1


def test_a_head_the_store_lacks_is_named_before_prefect_starts(tmp_path):
    FeatureStore(str(tmp_path / "s")).corpus("inbox").commit_snapshot(
        pa.table({"doc_id": ["d1"], "text_sha": ["a1"]}))
    code, stderr, prefect = embcache(tmp_path, "--store", "s", "predict", "inbox", "--head", "topics")
    assert code == EXIT_STORE and "no saved head named 'topics'" in stderr and not prefect, stderr


def small_store(path: Path) -> Path:
    FeatureStore(str(path)).corpus("c").commit_snapshot(pa.table({"doc_id": ["d1"], "text_sha": ["a1"]}))
    return path


@pytest.mark.parametrize("args", [["verify", "--store", "{s}"], ["status", "--json", "--store", "{s}"],
                                  ["status", "--store={s}", "--json"], ["query", "sql", "SELECT 1", "--store", "{s}"],
                                  ["verify", "-v", "--store", "{s}"]], ids=" ".join)
def test_global_options_may_follow_the_command(tmp_path, args):
    """`embcache verify --store s` (verify's own --help example) failed: --store only worked first."""
    store = small_store(tmp_path / "s")
    r = runner.invoke(app, [a.replace("{s}", str(store)) for a in args])
    assert r.exit_code == 0, r.output


def test_an_option_after_the_command_still_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBCACHE_STORE", str(tmp_path / "elsewhere"))
    store = small_store(tmp_path / "s")
    r = runner.invoke(app, ["status", "--json", "--store", str(store)])
    assert r.exit_code == 0 and str(store) in r.stdout, r.output


def test_a_usage_error_is_exit_2_and_the_exit_codes_are_in_the_readme():
    r = runner.invoke(app, ["status", "--no-such-option"])
    assert r.exit_code == EXIT_USAGE
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("### Exit codes"):]
    for code in EXIT:
        assert re.search(rf"^\| {code} \|", table, re.M), f"exit code {code} is not in README's table"
