"""Security (issue 7, "Fault suite", last bullet), in one place: real model files with a
planted malicious pickle, real DuckDB, real store directories, the real CLI; nothing mocked.

The issue's list, and where each point is proven (tests elsewhere are referenced, not repeated):

1. Model loading never unpickles.
   - only pickle weights in the directory -> refused before torch opens them:
     tests/pipeline/test_model.py::test_pickle_only_dir_refused_without_unpickling (load_model);
     here: load_classifier and plan_bert (the featurize flow's first step).
   - config.json naming pickle weights (`transformers_weights`):
     tests/pipeline/test_model.py::test_config_naming_pickle_weights_refused.
   - here: a malicious pytorch_model.bin beside model.safetensors is never opened; a
     safetensors index naming a pickle shard is refused (it used to reach torch.load); a
     pickle renamed *.safetensors is refused cleanly; no code path calls an unpickler.
2. trust_remote_code is never set: every from_pretrained passes trust_remote_code=False and
   nothing anywhere sets it otherwise (source scan); configs and tokenizer configs with
   auto_map and custom code are refused or ignored, their code never runs
   (load_model + a BERT auto_map: tests/pipeline/test_model.py::test_remote_code_never_runs).
3. The SQL surface cannot write, attach, install/load, set, or read outside the store:
   tests/storage/test_query.py::test_sql_refuses_anything_but_one_select (COPY, CREATE,
   INSERT, DROP, ATTACH, INSTALL, LOAD, SET, two statements, PRAGMA),
   ::test_sql_cannot_read_outside_the_store (read_csv('/etc/passwd'), read_text, '../'
   parquet, glob('/*')), tests/flows/test_cli.py::test_query_sql_refuses_writes_with_a_clear_message
   (CLI COPY). Here: DELETE/UPDATE/EXPORT/…; EXPLAIN ANALYZE, which runs the statement it
   wraps (it could COPY into the store); DuckDB's own temp directory (./.tmp was readable);
   file:// URLs, /proc, sibling directories, symlinks, secrets, environment; the CLI.
4. Store paths from user input cannot escape the root: table, corpus, model and model-file
   names, fingerprints, run ids (`--run`), and file names inside manifests and model
   listings (a hostile store); gc never deletes through a symlink. Output files the user
   names (`query features -o`, `export vectors PATH`) are the user's own paths, outside the
   store by design, and are not store paths.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from embcache.stages.bert import BertConfig, plan_bert
from embcache.cli.main import app
from embcache.stages.run_record import load as read_run
from embcache.pipeline.errors import ModelLoadError
from embcache.pipeline.model import load_classifier, load_model, load_tokenizer, model_digest
from embcache.storage import FeatureStore, FormatError, InvalidName, NotFound, QueryRefused, StoreError, spec
from embcache.storage.fs import StoreFS
from embcache.storage.maintenance import gc, verify
from embcache.storage.query import sql
from embcache.storage.table import Table
from tests.storage.conftest import feature_rows, sha

REPO = Path(__file__).parents[2]
PACKAGES = ("storage", "pipeline", "flows")
runner = CliRunner()


# == 1. model loading never unpickles ==========================================================
class _Plant:
    """Unpickling this runs code that creates `marker` (what an attacker's pickle would do).
    Its pickle holds only `builtins.exec` and a string: it needs nothing from this module."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps({"embeddings.word_embeddings.weight": _Plant(marker)})


@pytest.fixture
def model_copy(tiny_bert, tmp_path) -> Path:  # noqa: F811
    dst = tmp_path / "model"
    shutil.copytree(tiny_bert, dst)
    return dst


@pytest.fixture
def marker(tmp_path) -> Path:
    m = tmp_path / "pwned"
    pickle.loads(malicious_pickle(tmp_path / "proof"))           # the payload really runs when unpickled
    assert (tmp_path / "proof").exists()
    yield m
    assert not m.exists(), "the planted pickle was unpickled"


def test_pickle_beside_safetensors_is_never_opened(model_copy, marker):
    """A malicious pytorch_model.bin next to model.safetensors: every loader takes the
    safetensors weights, the digest ignores the pickle, nothing unpickles it."""
    digest = model_digest(model_copy)
    (model_copy / "pytorch_model.bin").write_bytes(malicious_pickle(marker))
    model = load_model(model_copy)
    weights = load_file(model_copy / "model.safetensors")
    assert torch.equal(model.embeddings.word_embeddings.weight, weights["embeddings.word_embeddings.weight"])
    load_classifier(model_copy, num_labels=2)
    assert model_digest(model_copy) == digest
    plan_bert(str(model_copy.parent / "store"), BertConfig(model=str(model_copy)))


@pytest.mark.parametrize("loader", ["load_classifier", "plan_bert"])
def test_pickle_only_directory_is_refused_by_every_entry_point(model_copy, marker, loader):
    """Only pickle weights: load_classifier and the featurize flow's planning refuse before
    anything is opened (load_model: tests/pipeline/test_model.py)."""
    (model_copy / "model.safetensors").unlink()
    (model_copy / "pytorch_model.bin").write_bytes(malicious_pickle(marker))
    with pytest.raises(ModelLoadError, match="pickle|no weights"):
        if loader == "load_classifier":
            load_classifier(model_copy, num_labels=2)
        else:
            plan_bert(str(model_copy.parent / "store"), BertConfig(model=str(model_copy)))


@pytest.mark.parametrize("load", [load_model, lambda p: load_classifier(p, num_labels=2)],
                         ids=["load_model", "load_classifier"])
def test_safetensors_index_naming_a_pickle_shard_is_refused(model_copy, marker, load):
    """A sharded checkpoint's index whose shard is a pickle. transformers loads whatever file
    the index names: before the fix this reached torch.load (stopped only by its weights_only
    unpickler, escaping as UnpicklingError). Now refused by name, nothing opened."""
    (model_copy / "model.safetensors").unlink()
    (model_copy / "pytorch_model-00001-of-00001.bin").write_bytes(malicious_pickle(marker))
    (model_copy / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"embeddings.word_embeddings.weight": "pytorch_model-00001-of-00001.bin"}}))
    with pytest.raises(ModelLoadError, match="not safetensors.*refusing to unpickle"):
        load(model_copy)


@pytest.mark.parametrize("load", [load_model, lambda p: load_classifier(p, num_labels=2)],
                         ids=["load_model", "load_classifier"])
def test_pickle_renamed_to_safetensors_is_refused_cleanly(model_copy, marker, load):
    """A pickle saved as model.safetensors is parsed as safetensors (a header), never
    unpickled, and refused with ModelLoadError (it used to escape as SafetensorError)."""
    (model_copy / "model.safetensors").write_bytes(malicious_pickle(marker))
    with pytest.raises(ModelLoadError, match="cannot load"):
        load(model_copy)


UNPICKLERS = {("torch", "load"), ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"),
              ("joblib", "load"), ("dill", "load"), ("dill", "loads"), ("cloudpickle", "load"),
              ("cloudpickle", "loads"), ("marshal", "loads"), ("pd", "read_pickle"), ("pandas", "read_pickle"),
              ("KeyedVectors", "load"), ("Word2Vec", "load"), ("shelve", "open")}


def package_sources(packages=PACKAGES):
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            yield node, owner, name


def test_no_code_path_calls_an_unpickler():
    """No torch.load / pickle / joblib / gensim native load anywhere in the packages; np.load
    only without allow_pickle=True; safetensors' own `load` is fine."""
    found = []
    for path, tree in package_sources():
        for node, owner, name in calls(tree):
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if (owner, name) in UNPICKLERS:
                found.append(f"{where} {owner}.{name}")
            if name == "load" and owner in ("np", "numpy"):
                pickles = [k for k in node.keywords if k.arg == "allow_pickle"]
                if any(not (isinstance(k.value, ast.Constant) and k.value.value is False) for k in pickles):
                    found.append(f"{where} np.load(allow_pickle=…)")
    assert found == []


# == 2. trust_remote_code is never set =========================================================
def test_trust_remote_code_is_never_true_anywhere():
    """Every from_pretrained in the packages passes trust_remote_code=False itself (not
    trusting a library default), and no code (packages, benchmarks) sets it to anything else."""
    missing, set_otherwise = [], []
    for path, tree in package_sources(PACKAGES + ("benchmarks",)):
        for node, _, name in calls(tree):
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            for k in node.keywords:
                if k.arg == "trust_remote_code" and not (isinstance(k.value, ast.Constant) and k.value.value is False):
                    set_otherwise.append(where)
            in_package = path.relative_to(REPO).parts[0] in PACKAGES
            if in_package and name == "from_pretrained" and not any(k.arg == "trust_remote_code" for k in node.keywords):
                missing.append(where)
    assert set_otherwise == [] and missing == []
    assert any(True for path, tree in package_sources() for _, _, n in calls(tree) if n == "from_pretrained")


def _plant_code(folder: Path, marker: Path) -> None:
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")


@pytest.mark.parametrize("load", [load_model, lambda p: load_classifier(p, num_labels=2)],
                         ids=["load_model", "load_classifier"])
def test_custom_architecture_with_remote_code_is_refused(model_copy, marker, load):
    """A config whose model_type only its own code defines (auto_map -> evil.py): refused
    with ModelLoadError, evil.py never imported."""
    config = json.loads((model_copy / "config.json").read_text())
    config.update(model_type="evilbert", architectures=["EvilModel"],
                  auto_map={"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                            "AutoModelForSequenceClassification": "evil.EvilModel"})
    (model_copy / "config.json").write_text(json.dumps(config))
    _plant_code(model_copy, marker)
    with pytest.raises(ModelLoadError, match="custom code"):
        load(model_copy)


def test_bert_classifier_with_auto_map_ignores_it(model_copy, marker):
    """load_classifier on a library architecture whose config carries auto_map: the library
    class is used, the custom code is not (load_model: tests/pipeline/test_model.py)."""
    config = json.loads((model_copy / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "evil.EvilModel"}
    (model_copy / "config.json").write_text(json.dumps(config))
    _plant_code(model_copy, marker)
    model = load_classifier(model_copy, num_labels=2)
    assert type(model).__module__.startswith("transformers.models.bert")


@pytest.mark.parametrize("tokenizer_class", [None, "EvilTokenizer"])
def test_tokenizer_config_with_remote_code_is_ignored(model_copy, marker, tokenizer_class):
    """tokenizer_config.json with auto_map (and a class only evil.py defines): the tokenizer
    loads from its own files, evil.py never runs."""
    path = model_copy / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", "evil.EvilTokenizerFast"]}
    if tokenizer_class:
        config["tokenizer_class"] = tokenizer_class
    path.write_text(json.dumps(config))
    _plant_code(model_copy, marker)
    tokenizer = load_tokenizer(model_copy)
    assert tokenizer.is_fast and "evil" not in type(tokenizer).__module__
    assert tokenizer("the cat sat")["input_ids"][1] == tokenizer.convert_tokens_to_ids("the")


# == 3. the SQL surface ========================================================================
@pytest.fixture
def filled(tmp_path) -> FeatureStore:
    store = FeatureStore(tmp_path / "store")
    store.table("bert_features", spec("encode", 1, {"pooling": "mean"})).write(feature_rows(range(10)))
    store.corpus("news").commit_snapshot(pa.table({"doc_id": [f"d{i}" for i in range(10)],
                                                   "text_sha": [sha(i) for i in range(10)]}))
    return store


def files_under(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


@pytest.mark.parametrize("statement", [
    "DELETE FROM embcache_tables",
    "UPDATE embcache_tables SET rows = 0",
    "EXPORT DATABASE '{root}/dump'",
    "IMPORT DATABASE '{root}'",
    "CHECKPOINT",
    "VACUUM",
    "DETACH memory",
    "USE memory",
    "RESET enable_external_access",
    "CALL duckdb_settings()",
    "CREATE SECRET s (TYPE s3, KEY_ID 'x', SECRET 'y')",
    "LOAD '{root}/evil.duckdb_extension'",
    "EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{root}/x.csv'",
    "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
    "EXPLAIN (FORMAT json) COPY (SELECT 1) TO '{root}/x.csv'",
    "explain  analyse COPY bert_features TO '{root}/x.parquet'",
    "/* comment */ EXPLAIN SET enable_external_access = true",
])
def test_sql_refuses_every_other_statement(filled, statement):
    """Beyond tests/storage/test_query.py's list. EXPLAIN ANALYZE runs what it wraps: before
    the fix, `EXPLAIN ANALYZE COPY … TO '<root>/x.csv'` wrote that file into the store."""
    before = files_under(filled.root)
    with pytest.raises(QueryRefused):
        sql(filled, statement.format(root=filled.root))
    assert files_under(filled.root) == before


@pytest.mark.parametrize("statement", [
    "EXPLAIN SELECT count(*) FROM bert_features",
    "EXPLAIN ANALYZE SELECT count(*) FROM bert_features",
    "EXPLAIN (FORMAT json) SELECT 1",
    "WITH x AS (SELECT text_sha FROM bert_features) SELECT count(*) FROM x",
    "FROM corpora.news SELECT count(*)",
])
def test_sql_still_answers_explain_and_select(filled, statement):
    assert sql(filled, statement).num_rows >= 1


@pytest.mark.parametrize("statement", [
    "SELECT * FROM read_csv('file:///etc/passwd')",
    "SELECT * FROM read_blob('{root}/tables/../../outside/secret.csv')",
    "SELECT * FROM read_csv('{root}-sibling/secret.csv')",
    "SELECT * FROM read_csv('{root}/link/secret.csv')",
    "SELECT * FROM read_json('/proc/self/environ')",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM parquet_metadata('{root}/../outside/secret.parquet')",
    "SELECT * FROM glob('{root}/../*')",
    "SELECT * FROM read_csv('{cwd}/.tmp/secret.csv')",
    "SELECT * FROM duckdb_secrets()",
])
def test_sql_cannot_read_outside_the_store(filled, tmp_path, monkeypatch, statement):
    """Beyond tests/storage/test_query.py's list: URLs, /proc, a sibling directory whose name
    extends the root's, a symlink inside the store pointing out, and DuckDB's default temp
    directory ./.tmp, which DuckDB itself adds to the allowed directories (readable before
    the fix: the query ran with the working directory's .tmp/ open to it)."""
    outside = tmp_path / "outside"
    for folder in (outside, Path(f"{filled.root}-sibling"), tmp_path / "cwd" / ".tmp"):
        folder.mkdir(parents=True)
        (folder / "secret.csv").write_text("secret\nhunter2\n")
    pq.write_table(pa.table({"secret": ["hunter2"]}), outside / "secret.parquet")
    os.symlink(outside, Path(filled.root) / "link")
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(StoreError) as e:
        sql(filled, statement.format(root=filled.root, cwd=tmp_path / "cwd"))
    assert "hunter2" not in str(e.value)


def test_sql_cannot_read_the_environment(filled, monkeypatch):
    """Credentials (say an s3 store's keys) live in the environment: no SQL function reads it."""
    monkeypatch.setenv("EMBCACHE_TEST_SECRET", "hunter2")
    for statement in ("SELECT getenv('EMBCACHE_TEST_SECRET')", "SELECT current_setting('EMBCACHE_TEST_SECRET')"):
        with pytest.raises(StoreError) as e:
            sql(filled, statement)
        assert "hunter2" not in str(e.value)


def test_sql_cli_refuses_with_a_clear_message(filled):
    """`embcache query sql` exits 2 naming the refusal; nothing leaks to stdout, nothing is written."""
    before = files_under(filled.root)
    for statement, says in (("SELECT * FROM read_csv('/etc/passwd')", "refused by the sandbox"),
                            (f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{filled.root}/x.csv'", "EXPLAIN is accepted only"),
                            ("DELETE FROM embcache_tables", "DELETE statements are refused")):
        r = runner.invoke(app, ["--store", filled.root, "query", "sql", statement])
        assert r.exit_code == 2 and says in r.stderr and "root:" not in r.stdout, (statement, r.output)
    assert files_under(filled.root) == before


# == 4. store paths from user input ============================================================
BAD_NAMES = ["..", "../outside", "/etc", "a/b", "x/../../y", "Evil", "", "a\\b", "a b", "a\x00b", "name.json"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_from_user_input_cannot_leave_the_root(tmp_path, name):
    """Table, corpus, model-kind and model names go through one check; nothing is created
    outside the root (or anywhere) for a refused name."""
    store = FeatureStore(tmp_path / "store")
    store.table("ok", spec("x", 1, {})).write(feature_rows(range(2)))
    before = files_under(tmp_path)
    attempts = [lambda: store.table(name, spec("x", 1, {})).write(feature_rows(range(2))),
                lambda: store.open(name),
                lambda: store.corpus(name).commit_snapshot(pa.table({"doc_id": ["d"], "text_sha": ["s"]})),
                lambda: store.corpus_features(name, "ok"),
                lambda: store.models.put("head", name, {"head.json": b"{}"}),
                lambda: store.models.put(name, "topics", {"head.json": b"{}"}),
                lambda: store.models.get("head", name)]
    for attempt in attempts:
        with pytest.raises(InvalidName):
            attempt()
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("file", ["../evil.json", "/etc/evil.json", "a/b.json", "..", ".hidden"])
def test_model_file_names_cannot_leave_the_model_folder(tmp_path, file):
    store = FeatureStore(tmp_path / "store")
    with pytest.raises((InvalidName, ValueError)):
        store.models.put("head", "topics", {file: b"{}"})
    assert not store.models.exists("head", "topics") and files_under(tmp_path) in ([], ["store"])


def test_fingerprints_and_store_parts_cannot_leave_the_root(tmp_path):
    store = FeatureStore(tmp_path / "store")
    t = store.table("bert_features", spec("x", 1, {}))
    t.write(feature_rows(range(2)))
    for fp in ("../../../etc", "/etc/passwd", t.fingerprint[:12] + "/..", "A" * 64):
        with pytest.raises(NotFound):
            store.open("bert_features", fp)
        with pytest.raises(InvalidName):
            Table(store.fs, "bert_features", fp)
        with pytest.raises(InvalidName):
            store.corpus("news").link("bert_features", fp)
    fs = StoreFS(tmp_path / "store")
    for part in ("..", "../x", "/etc", "a/../..", "a\\b", "", "."):
        with pytest.raises(InvalidName):
            fs.path("tables", part)


def test_run_ids_cannot_leave_the_root(tmp_path):
    """`embcache report --run ID` reads runs/<ID>.json: a path-like id is refused."""
    store = FeatureStore(tmp_path / "store")
    store.table("bert_features", spec("x", 1, {})).write(feature_rows(range(2)))
    (tmp_path / "secret.json").write_text(json.dumps({"stages": []}))
    for run_id in ("../secret", "../../etc/passwd", "/etc/passwd", ".hidden", "a/b"):
        with pytest.raises((NotFound, InvalidName)):
            read_run(store, run_id)
        r = runner.invoke(app, ["--store", store.root, "report", "--run", run_id])
        assert r.exit_code in (2, 4) and "Traceback" not in r.output, (run_id, r.output)
    r = runner.invoke(app, ["--store", store.root, "query", "features", "../../etc", "--ids", "x"])
    assert r.exit_code == 2 and "table name must match" in r.stderr
    r = runner.invoke(app, ["--store", store.root, "query", "features", "bert_features", "--corpus", "../x",
                            "--ids", "x"])
    assert r.exit_code == 2 and "corpus name must match" in r.stderr


def test_ingest_with_a_path_like_corpus_name_creates_nothing(tmp_path):
    """The ingest task's body (what `embcache ingest ../evil …` runs) refuses the name; the
    texts it read may be cached (keyed by content, inside the store), nothing lands outside."""
    from embcache.stages.ingest import ingest_corpus
    from embcache.pipeline.ingest import IngestConfig, Source
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("the cat sat on the mat")
    with pytest.raises(InvalidName):
        ingest_corpus(str(tmp_path / "store"), "../evil", [Source(str(tmp_path / "docs"), format="files")],
                      IngestConfig())
    assert sorted(p.name for p in tmp_path.iterdir()) in (["docs"], ["docs", "store"])
    assert not (tmp_path / "evil").exists()


def _outside_parquet(tmp_path) -> tuple[Path, bytes]:
    path = tmp_path / "outside" / "secret.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"text_sha": [sha(0)], "vector": pa.array([[9.0] * 16], pa.list_(pa.float32(), 16)),
                             "input_ids": pa.array([[1]], pa.list_(pa.int32()))}), path)
    return path, path.read_bytes()


@pytest.mark.parametrize("listed", ["../../../../outside/secret.parquet", "{abs}", "../manifest.json"])
def test_a_hostile_manifest_cannot_point_reads_outside(tmp_path, listed):
    """A store from elsewhere whose manifest lists a file outside its folder, with that
    file's true size and sha256: before the fix a read served the outside file as a shard.
    Now reads, SQL and verify refuse the manifest, naming it."""
    store = FeatureStore(tmp_path / "store")
    t = store.table("bert_features", spec("x", 1, {}))
    t.write(feature_rows(range(3)))
    target, data = _outside_parquet(tmp_path)
    m = json.loads(Path(t.manifest_path).read_text())
    m["shards"][0].update(file=listed.format(abs=target), bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    Path(t.manifest_path).write_text(json.dumps(m))
    for read in (lambda: t.read(), lambda: t.lookup([sha(0)]), lambda: sql(store, "SELECT * FROM bert_features"),
                 lambda: store.open("bert_features")):
        with pytest.raises(FormatError, match="not a plain file name") as e:
            read()
        assert e.value.path == t.manifest_path
    assert verify(store).bad == [(t.manifest_path, f"lists shard file {listed.format(abs=target)!r}, "
                                                   "which is not a plain file name")]


def test_hostile_snapshot_and_model_listings_cannot_point_reads_outside(tmp_path):
    store = FeatureStore(tmp_path / "store")
    corpus = store.corpus("news")
    corpus.commit_snapshot(pa.table({"doc_id": ["d"], "text_sha": [sha(0)]}))
    m = json.loads(Path(corpus.manifest_path).read_text())
    m["snapshots"][0]["file"] = "/etc/passwd"
    Path(corpus.manifest_path).write_text(json.dumps(m))
    with pytest.raises(FormatError, match="snapshot file '/etc/passwd'"):
        corpus.read()
    info = store.models.put("head", "topics", {"head.json": b"{}"})
    listing = Path(store.models.dir("head", "topics", info.version)) / "model.json"
    obj = json.loads(listing.read_text())
    obj["files"] = {"../../../../../secret.json": obj["files"]["head.json"]}
    listing.write_text(json.dumps(obj))
    with pytest.raises(FormatError, match="not a plain file name"):
        store.models.get("head", "topics")


def test_gc_never_deletes_through_a_symlink(tmp_path):
    """A table folder that is a symlink to a directory outside: gc removes at most the link,
    never the files it points at."""
    store = FeatureStore(tmp_path / "store")
    store.table("bert_features", spec("x", 1, {})).write(feature_rows(range(2)))
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep me")
    (outside / "part-x.parquet").write_bytes(b"not a shard")
    (Path(store.root) / "tables" / "evil").mkdir(parents=True)
    os.symlink(outside, Path(store.root) / "tables" / "evil" / ("ab" * 32))
    old = 0
    for p in outside.iterdir():
        os.utime(p, (old, old))
    gc(store, grace_seconds=0)
    assert sorted(p.name for p in outside.iterdir() if p.name != ".lock") == ["keep.txt", "part-x.parquet"]
    assert (outside / "keep.txt").read_text() == "keep me"
    assert store.open("bert_features").read().num_rows == 2


def test_store_symlinks_do_not_widen_the_sql_sandbox(tmp_path):
    """DuckDB resolves the path it is asked for: a link inside the store to a parquet file
    outside is not readable through SQL."""
    store = FeatureStore(tmp_path / "store")
    store.table("bert_features", spec("x", 1, {})).write(feature_rows(range(2)))
    target, _ = _outside_parquet(tmp_path)
    os.symlink(target, Path(store.root) / "linked.parquet")
    with pytest.raises(QueryRefused, match="sandbox"):
        sql(store, f"SELECT * FROM read_parquet('{store.root}/linked.parquet')")
    assert np.array_equal(sql(store, "SELECT count(*) AS n FROM bert_features")["n"].to_numpy(), [2])
