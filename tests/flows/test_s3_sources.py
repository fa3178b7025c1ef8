"""Sources in S3 (moto's server on loopback, tests/s3server.py): change detection by ETag, the
ingest summary through the real console script, error lines, and a run config read on the
Dask runner and through the Python API.

What the server was asked for is read from its request log (werkzeug's), so "an unchanged
object is never read again" is checked where it matters: no GET of it reached the store.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.run_configs import write_run_config
from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.pipeline.ingest import IngestConfig, Source
from embcache.stages.ingest import ingest_corpus
from embcache.storage import FeatureStore
from tests.s3server import moto_s3

EMBCACHE = str(Path(sys.executable).parent / "embcache")
runner = CliRunner()


@pytest.fixture(scope="module")
def s3():
    """An S3 filesystem on a moto server with one bucket, "bucket"."""
    import s3fs
    with moto_s3("bucket"):
        yield s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def put(fs, prefix: str, objects: dict[str, list]) -> None:
    for name, records in objects.items():
        fs.pipe_file(f"bucket/{prefix}/{name}", "".join(json.dumps(r) + "\n" for r in records).encode())


@contextmanager
def object_gets():
    """The keys of the objects GET from the server meanwhile (listings and HEADs aside)."""
    keys: list[str] = []

    class Tap(logging.Handler):
        def emit(self, record):
            found = re.search(r'"(?:\x1b\[[\d;]*m)*GET /bucket/([^ ?]+) HTTP', record.getMessage())
            if found:
                keys.append(unquote(found[1]))

    log, tap = logging.getLogger("werkzeug"), Tap()
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(tap)
    try:
        yield keys
    finally:
        log.removeHandler(tap)
        log.setLevel(level)


def counts(summary) -> tuple:
    return (summary.files_added, summary.files_edited, summary.files_removed, summary.files_unchanged,
            summary.files_reread, summary.objects)


def snapshot(root) -> list[dict]:
    return FeatureStore(root).corpus("news").read().to_pylist()


def test_unchanged_objects_are_not_read_edited_ones_are_deleted_ones_leave(s3, tmp_path):
    put(s3, "cd", {"2024/a.jsonl": [{"text": "alpha"}, {"text": ""}], "2024/b.jsonl": [{"text": "beta"}],
                   "2025/c.jsonl": [{"text": "gamma"}]})
    source, root = Source("s3://bucket/cd/**/*.jsonl"), str(tmp_path / "store")
    first = ingest_corpus(root, "news", [source], IngestConfig())
    assert counts(first) == (3, 0, 0, 0, 0, 3) and first.rejected == {"empty_text": 1}
    with object_gets() as gets:
        again = ingest_corpus(root, "news", [source], IngestConfig())
    assert gets == [] and again.snapshot == first.snapshot and counts(again) == (0, 0, 0, 3, 0, 3)

    put(s3, "cd", {"2024/a.jsonl": [{"text": "alpha, edited"}, {"text": ""}],      # edited: new ETag
                   "2024/b.jsonl": [{"text": "beta"}],                              # the same bytes again
                   "2025/d.jsonl": [{"text": "delta"}]})                            # added
    s3.rm("bucket/cd/2025/c.jsonl")                                                 # deleted
    with object_gets() as gets:
        changed = ingest_corpus(root, "news", [source], IngestConfig())
    assert set(gets) == {"cd/2024/a.jsonl", "cd/2025/d.jsonl"}
    assert counts(changed) == (1, 1, 1, 1, 0, 3) and changed.new_texts == 2
    full = ingest_corpus(str(tmp_path / "full"), "news", [source], IngestConfig())
    assert snapshot(root) == snapshot(str(tmp_path / "full"))
    assert [d["doc_id"] for d in snapshot(root)] == ["2024/a.jsonl:1", "2024/b.jsonl:1", "2025/d.jsonl:1"]
    assert changed.rejected == full.rejected == {"empty_text": 1}


@pytest.mark.usefixtures("prefect_engine")
def test_the_console_script_says_which_objects_changed(s3, tmp_path):
    from prefect.settings import PREFECT_API_URL
    put(s3, "cli", {f"{name}.jsonl": [{"text": f"document {name}"}] for name in "abc"})
    root = str(tmp_path / "store")
    ingest_corpus(root, "news", [Source("s3://bucket/cli/*.jsonl")], IngestConfig())
    put(s3, "cli", {"a.jsonl": [{"text": "document a, edited"}], "d.jsonl": [{"text": "document d"}]})
    s3.rm("bucket/cli/c.jsonl")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}    # the session's server: no start-up
    done = subprocess.run([EMBCACHE, "--store", root, "ingest", "news", "s3://bucket/cli/*.jsonl"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 documents (2 new texts)" in done.stdout
    assert "sources: 3 objects: 1 added, 1 edited, 1 removed, 1 unchanged (not read)" in done.stdout


PROBE = """
import sys
if sys.argv[1] == "--without-s3fs":
    sys.argv.pop(1)
    sys.modules["s3fs"] = None            # as if embcache[s3] were not installed
from embcache.cli.main import app
app(sys.argv[1:], prog_name="embcache")
"""


def test_an_object_source_that_cannot_be_read_is_one_line_and_exit_2(s3, tmp_path, monkeypatch):
    put(s3, "errors", {"a.jsonl": [{"body": "no text field"}]})
    store = ["--store", str(tmp_path / "store")]
    for source, says in (("s3://no-such-bucket/news/*.jsonl", "no such bucket"),
                         ("s3://bucket/errors/*.csv", "matches no object"),
                         ("s3://bucket/nothing/", "matches no object"),
                         ("s3://bucket/errors/a.jsonl", "no column 'text' (--text-column")):
        r = runner.invoke(app, [*store, "ingest", "news", source])
        assert r.exit_code == 2 and says in r.stderr and "Traceback" not in r.output, (source, r.output)
        assert len(r.stderr.strip().splitlines()) == 1
    import s3fs
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()            # a cached filesystem keeps the credentials it found
    r = runner.invoke(app, [*store, "ingest", "news", "s3://bucket/errors/*.jsonl"])
    s3fs.S3FileSystem.clear_instance_cache()
    assert r.exit_code == 2 and "no credentials found" in r.stderr and "Traceback" not in r.output, r.output
    done = subprocess.run([sys.executable, "-c", PROBE, "--without-s3fs", *store, "ingest", "news", "s3://b/x.jsonl"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "pip install 'embcache[s3]'" in done.stderr


def write_config(path: Path, model: str) -> Path:
    return write_run_config(path, model=model, corpus="news", sources=[
        {"path": "s3://bucket/run/**/*.jsonl", "format": "jsonl", "label_column": "topic"}])


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_engine")
def test_a_run_config_with_an_s3_source_on_the_dask_runner_and_the_python_api(s3, tmp_path, tiny_bert):
    import embcache
    put(s3, "run", {"2024/a.jsonl": [{"text": "the cat sat on the mat", "topic": "pets"},
                                     {"text": "market shares rise", "topic": "money"}],
                    "2025/b.jsonl": [{"text": "the team won the game", "topic": "sport"}]})
    config = write_config(tmp_path / "pipeline.toml", tiny_bert)
    root = str(tmp_path / "store")
    r = runner.invoke(app, ["--runner", "dask", "--dask-workers", "1", "--store", root, "run", str(config)])
    assert r.exit_code == 0, r.output
    assert "sources: 2 objects: 2 added, 0 edited, 0 removed, 0 unchanged (not read)" in r.output
    assert [d["doc_id"] for d in snapshot(root)] == ["2024/a.jsonl:1", "2024/a.jsonl:2", "2025/b.jsonl:1"]
    assert FeatureStore(root).open("bert_features").read(["text_sha"]).num_rows == 3

    noop = embcache.run(str(config), store=root)      # lists the objects, finds their ETags unchanged:
    assert noop["unchanged_since"]                    # a run with nothing to do, nothing read
    assert ingest_stage(noop)["sources"] == {"files_added": 0, "files_edited": 0, "files_removed": 0,
                                             "files_unchanged": 2, "files_reread": 0, "objects": 2}


def ingest_stage(record: dict) -> dict:
    return next(s for s in record["stages"] if s["stage"] == "ingest")
