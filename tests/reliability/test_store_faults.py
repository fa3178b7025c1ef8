"""Faults of the disk and of committed files (issue 7): a full disk, a read-only store, and
truncated, bit-flipped or deleted shards, snapshots, manifests and specs.

Real files, real processes, real DuckDB, the real Prefect engine and a tiny real BERT;
nothing is mocked. How each fault is made:

- disk full: a small tmpfs mounted by the test (root on CI, as here), filled to an exact
  number of free pages by a filler file beside the store. Where mounting is refused those
  tests skip, and the RLIMIT_FSIZE test (writer processes whose files cannot grow past a
  limit: EFBIG, SIGXFSZ ignored) drives the same failing-write paths without privileges.
- read-only: that tmpfs remounted read-only (EROFS), and the store chmod'ed a-w with the
  reading and writing done by `embcache` processes that cannot bypass permissions (for
  root: CAP_DAC_OVERRIDE dropped from their capability bounding set before exec).
- damage: bytes of committed files changed in place.

What must hold after every fault: writes fail with a StoreError naming the file and the
OS's reason (the CLI exits 2 with that message, no traceback); `verify` is clean (or, for
damage, names each bad file and exits 1); committed rows read back equal to before; no
temp file is left; no listed shard is half-written; `gc` removes the orphans; reads of a
damaged file fail with CorruptShard naming it, or recompute; never a wrong vector.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from embcache.cli.app import EXIT_STORE
from embcache.cli.main import app
from embcache.pipeline.encode import EncodeConfig, encode_texts
from embcache.pipeline.model import load_model, load_tokenizer
from embcache.pipeline.tokenize import TokenizeConfig
from embcache.storage import CorruptShard, FeatureStore, StoreError, spec
from embcache.storage.fs import TMP_PREFIX
from embcache.storage.maintenance import gc, verify
from embcache.storage.query import as_matrix, lookup_vectors, sql, topk_cosine
from embcache.storage.table import read_current
from tests.pipeline.conftest import WORDS
from tests.storage.conftest import feature_rows, sha

EMBCACHE = str(Path(sys.executable).with_name("embcache"))
runner = CliRunner()
MAX_LENGTH = 16


# -- helpers ---------------------------------------------------------------------------------
def cli(root, *args):
    return runner.invoke(app, ["--store", str(root), *args])


def one_line(text: str) -> str:
    return text.replace("\n", "")


def write_docs(folder: Path, n_per_label: int, seed: int) -> None:
    """<folder>/<label>/<i>.txt of distinct sentences over the tiny BERT's words."""
    rng = np.random.default_rng(seed)
    for label in ("money", "sport"):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_label):
            words = rng.choice(WORDS, size=8)
            (folder / label / f"{i:03d}.txt").write_text(f"{label} {seed} {i} " + " ".join(words))


def expected_vectors(root, corpus: str, model_path: str) -> dict[str, np.ndarray]:
    """doc_id -> the vector a direct forward pass gives (what the store must hold)."""
    docs = FeatureStore(root).open("documents", FeatureStore(root).resolve_linked(corpus, "documents"))
    snap = FeatureStore(root).corpus(corpus).read(columns=["doc_id", "text_sha"])
    texts = docs.lookup(snap["text_sha"], ["text"])["text"].to_pylist()
    vecs = encode_texts(texts, load_tokenizer(model_path), load_model(model_path),
                        TokenizeConfig(max_length=MAX_LENGTH), EncodeConfig())
    return dict(zip(snap["doc_id"].to_pylist(), vecs))


def stored_vectors(root, corpus: str = "news") -> dict[str, np.ndarray]:
    joined = FeatureStore(root).corpus_features(corpus, "bert_features")
    return dict(zip(joined["doc_id"].to_pylist(), as_matrix(joined["vector"])))


def temp_files(root) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.startswith(TMP_PREFIX)]


def unlisted_shards(store: FeatureStore) -> list[str]:
    """Shard files on disk that no manifest lists (orphans of failed commits), from the disk itself."""
    out = []
    for folder in Path(store.root).glob("tables/*/*/shards"):
        manifest = folder.parent / "manifest.json"
        listed = {s["file"] for s in json.loads(manifest.read_text())["shards"]} if manifest.exists() else set()
        out += [str(p) for p in folder.iterdir() if p.name not in listed]
    return out


def assert_clean(store: FeatureStore) -> None:
    report = verify(store)
    assert report.ok, report.bad
    assert temp_files(store.root) == []


def age_tree(root, seconds: float = 7200) -> None:
    """Make every file look old, so gc's grace period does not protect it."""
    t = time.time() - seconds
    for d, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(d, f), (t, t))


# -- a small tmpfs: a disk that really fills up -------------------------------------------
@contextmanager
def tmpfs(path: Path, size_kb: int, options: str = ""):
    """Mount a tmpfs of `size_kb` at `path`; skip (naming why) where this process may not mount."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here; test_file_size_limit_* covers failing writes instead")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755{options}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); "
                    "test_file_size_limit_* covers failing writes instead")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def leave_free(disk: Path, pages: int) -> None:
    """Grow or shrink a filler file beside the store until exactly `pages` pages are free."""
    fd = os.open(disk / "filler", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        st = os.statvfs(disk)
        free, want = st.f_bavail * st.f_frsize, pages * st.f_frsize
        size = os.fstat(fd).st_size
        if free > want:
            os.posix_fallocate(fd, size, free - want)
        elif free < want:
            os.ftruncate(fd, max(0, size - (want - free)))
    finally:
        os.close(fd)
    st = os.statvfs(disk)
    assert st.f_bavail == pages, (st.f_bavail, pages)


# -- the pipeline's own store, built once: ingest + featurize through the CLI and Prefect ----
@pytest.fixture(scope="module")
def pipeline_store(tmp_path_factory, tiny_bert, prefect_engine) -> Path:  # noqa: F811
    """A store made by `embcache ingest` + `featurize bert` (3 feature shards of 8 documents)."""
    base = tmp_path_factory.mktemp("faults")
    write_docs(base / "docs", 12, seed=0)
    root = base / "store"
    r = cli(root, "ingest", "news", str(base / "docs"), "--format", "folder")
    assert r.exit_code == 0, r.output
    r = cli(root, "featurize", "bert", "news", "--model", tiny_bert, "--max-length", str(MAX_LENGTH),
            "--shard-docs", "8")
    assert r.exit_code == 0, r.output
    return root


@pytest.fixture
def store_copy(pipeline_store, tmp_path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(pipeline_store, root)
    return root


# == disk full ==================================================================================
def test_disk_full_at_every_step_of_a_commit_keeps_the_store_consistent(tmp_path):
    """Commit after commit with 0, 1, 2, … pages free: each fails cleanly or commits whole.

    New tables (spec.json, manifest, current pointer), appends (shard, manifest) and
    corpus snapshots run out of space at every step of their commit. Each failure is a
    StoreError naming the file and "No space left on device"; after each, verify is
    clean, no temp file is left, every committed row reads back unchanged and the failed
    attempt's rows are either all committed or all absent. At the end gc, on the still
    full disk, removes exactly the orphan shards of the failed commits.

    The last step of a new table's commit is its name's current pointer: failing there,
    the rows are committed (the manifest was already replaced) and the error is still
    raised, while the name keeps meaning the previous fingerprint (pinned below).
    """
    with tmpfs(tmp_path / "disk", 1024) as disk:
        store = FeatureStore(disk / "store")
        base = store.table("bert_features", spec("encode", 1, {"k": -1}))
        base.write(feature_rows(range(40)))
        corpus = store.corpus("news")
        corpus.commit_snapshot(pa.table({"doc_id": [f"d{i}" for i in range(40)],
                                         "text_sha": [sha(i) for i in range(40)]}))
        expected = {base.fingerprint: feature_rows(range(40))}    # fingerprint -> committed rows
        snapshot = corpus.read()
        failed_at, outcomes = Counter(), Counter()
        attempts = [(pages, kind) for pages in range(0, 12) for kind in ("append", "new table", "snapshot")]
        for step, (pages, kind) in enumerate(attempts):
            leave_free(disk, pages)
            ids = range(1000 + 100 * step, 1060 + 100 * step)
            rows = feature_rows(ids)
            target = base if kind == "append" else store.table("bert_features", spec("encode", 1, {"k": step}))
            try:
                if kind == "snapshot":
                    corpus.commit_snapshot(pa.table({"doc_id": [f"s{i}" for i in ids],
                                                     "text_sha": [sha(i) for i in ids]}))
                    snapshot = corpus.read()
                else:
                    target.write(rows)
                outcomes[kind, "committed"] += 1
            except StoreError as e:
                assert "No space left on device" in e.reason, e
                assert e.path.startswith(store.root + "/"), e
                failed_at[Path(e.path).name if e.path.endswith(".json") else Path(e.path).parent.name] += 1
                outcomes[kind, "failed"] += 1
                if Path(e.path).name == "current.json":
                    assert len(target.missing(rows["text_sha"])) == 0
                    assert read_current(store.fs, "bert_features") != target.fingerprint
            if kind != "snapshot":
                missing = len(target.missing(rows["text_sha"]))
                assert missing in (0, len(ids)), "a commit must be all or nothing"
                if missing == 0:
                    old = expected.get(target.fingerprint)
                    expected[target.fingerprint] = rows if old is None else pa.concat_tables([old, rows])
            assert_clean(store)
            for fp, want in expected.items():
                got = store.open("bert_features", fp).read().sort_by("text_sha")
                assert got.equals(want.sort_by("text_sha")), f"rows of {fp[:12]} changed"
            assert corpus.read().equals(snapshot)
        # Every step of a commit ran out of space at least once, and some commits fit.
        assert {"shards", "spec.json", "manifest.json", "current.json", "snapshots"} <= set(failed_at), failed_at
        assert all(outcomes[k, "committed"] for k in ("append", "new table", "snapshot")), outcomes
        leave_free(disk, 0)
        orphans = unlisted_shards(store)
        snapshots_dir = Path(corpus.dir) / "snapshots"
        listed = {s.file for s in corpus.manifest().snapshots}
        orphans += [str(p) for p in snapshots_dir.iterdir() if p.name not in listed]
        assert orphans, "a shard written before its manifest failed is an orphan"
        report = gc(store, grace_seconds=0, unreferenced_tables=False)    # works on a full disk
        assert sorted(store.fs.relative(p) for p in orphans) == sorted(report.removed)
        assert unlisted_shards(store) == [] and temp_files(store.root) == []
        assert_clean(store)
        for fp, want in expected.items():
            assert store.open("bert_features", fp).read().sort_by("text_sha").equals(want.sort_by("text_sha"))


def test_out_of_inodes_fails_cleanly(tmp_path):
    """A disk out of inodes (room for bytes, none for new files or folders): new tables and
    snapshots fail with StoreError naming the path, whether the folder, the lock file or a
    temp file could not be created (a raw OSError from makedirs before the fix)."""
    with tmpfs(tmp_path / "disk", 8192, ",nr_inodes=48") as disk:
        store = FeatureStore(disk / "store")
        committed = {}
        for step in range(48):
            t = store.table("bert_features", spec("encode", 1, {"k": step}))
            try:
                if step % 2:
                    store.corpus(f"c{step}").commit_snapshot(pa.table({"doc_id": ["d"], "text_sha": [sha(step)]}))
                else:
                    t.write(feature_rows(range(step, step + 3)))
                    committed[t.fingerprint] = feature_rows(range(step, step + 3))
            except StoreError as e:
                assert "No space left on device" in e.reason and e.path.startswith(store.root + "/"), e
                break
        else:
            pytest.fail("the disk never ran out of inodes")
        assert len(committed) >= 2
        assert_clean(store)
        for fp, want in committed.items():
            assert store.open("bert_features", fp).read().equals(want)
        gc(store, grace_seconds=0, unreferenced_tables=False)
        assert unlisted_shards(store) == [] and temp_files(store.root) == []


def test_disk_full_through_the_cli_then_resume(tmp_path, store_copy, tiny_bert):
    """`embcache featurize bert` and `ingest` on a full disk: exit 2 with the store path and
    "No space left on device", nothing committed changes; with space again, featurize
    resumes and stores the vectors a direct forward pass gives."""
    write_docs(tmp_path / "more", 40, seed=1)
    write_docs(tmp_path / "third", 2, seed=2)
    with tmpfs(tmp_path / "disk", 8192) as disk:
        root = disk / "store"
        shutil.copytree(store_copy, root)
        before = stored_vectors(root)
        r = cli(root, "ingest", "more", str(tmp_path / "more"), "--format", "folder")
        assert r.exit_code == 0, r.output
        leave_free(disk, 0)
        r = cli(root, "featurize", "bert", "more", "--model", tiny_bert, "--max-length", str(MAX_LENGTH),
                "--shard-docs", "16")
        assert r.exit_code == 6, r.output
        # Prefect logs the failed task's traceback; the command's own last word is the error.
        assert f"error: {root}/tables/bert_tokens/" in one_line(r.stderr)
        assert "write failed: No space left on device" in one_line(r.stderr)
        r = cli(root, "ingest", "third", str(tmp_path / "third"), "--format", "folder")
        assert r.exit_code == 6 and "No space left on device" in one_line(r.stderr), r.output
        store = FeatureStore(root)
        assert "third" not in store.corpora()
        assert_clean(store)
        assert cli(root, "verify").exit_code == 0
        r = cli(root, "gc", "--grace", "0", "--keep-unreferenced")                 # on the full disk
        assert r.exit_code == 0, r.output
        assert unlisted_shards(store) == [] and temp_files(root) == []
        got = stored_vectors(root)
        assert got.keys() == before.keys() and all(np.array_equal(got[k], before[k]) for k in before)

        (disk / "filler").unlink()
        r = cli(root, "featurize", "bert", "more", "--model", tiny_bert, "--max-length", str(MAX_LENGTH),
                "--shard-docs", "16")
        assert r.exit_code == 0, r.output
        got, want = stored_vectors(root, "more"), expected_vectors(root, "more", tiny_bert)
        assert got.keys() == want.keys() and len(got) == 80
        np.testing.assert_allclose(np.stack([got[k] for k in want]), np.stack(list(want.values())), atol=1e-5)
        assert_clean(store)


WRITER = textwrap.dedent("""
    import json, sys
    from embcache.storage import FeatureStore, StoreError, spec
    from tests.storage.conftest import feature_rows, sha
    import pyarrow as pa
    store = FeatureStore(sys.argv[1])
    t = store.table("bert_features", spec("encode", 1, {"k": 0}))
    done, n = [], 10
    while True:                      # shards double until one is over the file size limit
        ids = list(range(len(done), len(done) + n))
        try:
            t.write(feature_rows(ids))
        except StoreError as e:
            error = str(e)
            break
        done += ids
        n *= 2
    try:
        store.corpus("news").commit_snapshot(pa.table({"doc_id": [f"d{i}" for i in range(5000)],
                                                      "text_sha": [sha(i) for i in range(5000)]}))
        snapshot_error = None
    except StoreError as e:
        snapshot_error = str(e)
    print(json.dumps({"done": done, "error": error, "snapshot_error": snapshot_error}))
""")


def limit_file_size(max_bytes: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # ignored signals stay ignored across exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def test_file_size_limit_makes_writes_fail_cleanly(tmp_path):
    """Without privileges: writer processes whose files cannot pass 64 KiB (EFBIG).

    The store API process commits shards until one is too large: that write fails with a
    StoreError naming the shard, the earlier shards stay committed and readable, no temp
    file or half-written shard is left. `embcache report` (a CLI write) exits 2 naming its file.
    """
    root = tmp_path / "store"
    r = subprocess.run([sys.executable, "-c", WRITER, str(root)], capture_output=True, text=True,
                       cwd=Path(__file__).parents[2], preexec_fn=limit_file_size(64 * 1024), timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "File too large" in out["error"] and out["error"].startswith(str(root) + "/tables/bert_features/")
    assert out["error"].split(":")[0].endswith(".parquet")
    assert "File too large" in out["snapshot_error"] and "/corpora/news/snapshots/" in out["snapshot_error"]
    store = FeatureStore(root)
    assert len(out["done"]) >= 30 and "news" not in store.corpora()
    got = store.open("bert_features").read().sort_by("text_sha")
    assert got.equals(feature_rows(out["done"]).sort_by("text_sha"))
    assert_clean(store)
    assert unlisted_shards(store) == []          # the failed shard never reached shards/ under its name

    r = subprocess.run([EMBCACHE, "--store", str(root), "report"], capture_output=True, text=True,
                       preexec_fn=limit_file_size(512), timeout=300)
    assert r.returncode == 6, r.stdout + r.stderr
    assert "File too large" in r.stderr and f"{root}/reports/" in one_line(r.stderr)
    assert "Traceback" not in r.stderr
    assert_clean(store)


# == read-only store ============================================================================
def test_read_only_mount_refuses_writes_and_still_answers_reads(tmp_path, store_copy, tiny_bert):  # noqa: F811
    """The store on a tmpfs remounted read-only (EROFS): every kind of write fails with a
    StoreError naming the file and "Read-only file system" (CLI: exit 2); reads, SQL,
    lookups, top-k, status and verify answer as before, and so does a featurize that
    finds everything cached."""
    write_docs(tmp_path / "docs", 2, seed=3)
    with tmpfs(tmp_path / "disk", 8192) as disk:
        root = disk / "store"
        shutil.copytree(store_copy, root)
        store = FeatureStore(root)
        features = store.open("bert_features")
        orphan = Path(features.shard_path("part-orphan.parquet"))
        orphan.write_bytes(b"half a shard")
        age_tree(root)
        before = stored_vectors(root)
        keys = features.keys().to_pylist()[:3]
        remount(disk, "ro")
        try:
            writes = {
                "shard": lambda: features.write(feature_rows(range(3))),
                "snapshot": lambda: store.corpus("news").commit_snapshot(
                    pa.table({"doc_id": ["x"], "text_sha": [sha(1)]})),
                "link": lambda: store.corpus("news").link("bert_features", "0" * 64),
                "new table": lambda: store.table("other", spec("x", 1, {})).create(),
                "model": lambda: store.models.put("head", "topics", {"head.json": b"{}"}),
                "gc": lambda: gc(store, grace_seconds=0),
            }
            for what, write in writes.items():
                with pytest.raises(StoreError, match="Read-only file system") as e:
                    write()
                assert e.value.path.startswith(str(root) + "/"), (what, e.value)
            # Reads: Python API, SQL, top-k, and the CLI's read commands.
            assert stored_vectors(root).keys() == before.keys()
            assert all(np.array_equal(stored_vectors(root)[k], v) for k, v in before.items())
            vecs = lookup_vectors(store, "bert_features", keys)
            assert vecs.shape == (3, 32)
            assert topk_cosine(store, "bert_features", vecs, k=1)[0] == [[k] for k in keys]
            n = sql(store, "SELECT count(*) AS n FROM corpora.news JOIN bert_features USING (text_sha)")
            assert n["n"].to_pylist() == [24]
            assert cli(root, "verify").exit_code == 0
            assert cli(root, "status", "--json").exit_code == 0
            r = cli(root, "query", "features", "bert_features", "--corpus", "news", "--ids", "money/000.txt")
            assert r.exit_code == 0 and np.array_equal(json.loads(r.stdout)[0]["vector"], before["money/000.txt"])
            r = cli(root, "gc", "--dry-run", "--grace", "0")
            assert r.exit_code == 0 and "part-orphan.parquet" in r.stdout
            # Nothing to compute is not a write: a fully cached featurize succeeds and says so.
            r = cli(root, "featurize", "bert", "news", "--model", tiny_bert, "--max-length", str(MAX_LENGTH),
                    "--shard-docs", "8")
            assert r.exit_code == 0, r.output
            store.corpus("news").link("bert_features", features.fingerprint)    # already the default
            # Writes through the CLI: a clear message, no traceback.
            r = cli(root, "gc", "--grace", "0")
            assert r.exit_code == 6 and "Read-only file system" in r.stderr and "Traceback" not in r.output
            assert "part-orphan.parquet" in one_line(r.stderr)
            r = cli(root, "ingest", "other", str(tmp_path / "docs"), "--format", "folder")
            assert r.exit_code == 6, r.output
            assert "Read-only file system" in r.stderr and str(root) in one_line(r.stderr)
        finally:
            remount(disk, "rw")
        assert orphan.exists() and "other" not in store.corpora()
        assert_clean(store)


def _drop_permission_bypass() -> None:
    """In the child before exec: root keeps its uid but loses CAP_DAC_OVERRIDE (bounding set),
    so file permissions apply to it as to anyone. A no-op for an unprivileged user."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1
    if libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")


def run_unprivileged(*args, timeout=300):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_drop_permission_bypass, cwd=Path(__file__).parents[2])


def test_read_only_permissions_refuse_writes_and_still_answer_reads(store_copy):
    """The store chmod'ed a-w, used by processes that cannot bypass permissions: `embcache`
    reads (query sql/features, status, verify) answer as before; writes (gc, report, the
    store API's commits) fail with "Permission denied" and the path, exit 2, no traceback."""
    root = store_copy
    orphan = Path(FeatureStore(root).open("bert_features").shard_path("part-orphan.parquet"))
    orphan.write_bytes(b"half a shard")
    age_tree(root)
    before = stored_vectors(root)
    subprocess.run(["chmod", "-R", "a-w", str(root)], check=True)
    try:
        try:
            probe = run_unprivileged(sys.executable, "-c", f"open({str(root / 'probe')!r}, 'w')")
        except (OSError, subprocess.SubprocessError) as e:
            pytest.skip(f"cannot start a process without CAP_DAC_OVERRIDE here: {e}")
        if probe.returncode == 0:
            pytest.skip("this process cannot give up its permission bypass: the chmod would prove nothing")
        assert "Permission denied" in probe.stderr

        r = run_unprivileged(EMBCACHE, "--store", str(root), "query", "features", "bert_features",
                             "--corpus", "news", "--ids", "money/000.txt,sport/011.txt")
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert np.array_equal(got[0]["vector"], before["money/000.txt"])
        assert np.array_equal(got[1]["vector"], before["sport/011.txt"])
        r = run_unprivileged(EMBCACHE, "--store", str(root), "query", "sql",
                             "SELECT count(*) AS n FROM corpora.news JOIN bert_features USING (text_sha)",
                             "--format", "json")
        assert r.returncode == 0 and json.loads(r.stdout) == [{"n": 24}], r.stderr
        for args in (["verify"], ["status", "--json"]):
            r = run_unprivileged(EMBCACHE, "--store", str(root), *args)
            assert r.returncode == 0, (args, r.stderr)
        for args, where in ((["gc", "--grace", "0"], "part-orphan.parquet"), (["report"], f"{root}/reports")):
            r = run_unprivileged(EMBCACHE, "--store", str(root), *args)
            assert r.returncode == 6, (args, r.stdout, r.stderr)
            assert "Permission denied" in r.stderr and where in one_line(r.stderr), r.stderr
            assert "Traceback" not in r.stderr
        code = textwrap.dedent(f"""
            import pyarrow as pa
            from embcache.storage import FeatureStore, StoreError
            from tests.storage.conftest import feature_rows, sha
            store = FeatureStore({str(root)!r})
            t = store.open("bert_features")
            for write in (lambda: t.write(feature_rows(range(3), dim=32).drop_columns(["input_ids"])),
                          lambda: store.corpus("news").commit_snapshot(pa.table({{"doc_id": ["x"], "text_sha": ["y"]}})),
                          lambda: store.corpus("news").link("bert_features", "0" * 64)):
                try:
                    write()
                    print("WROTE")
                except StoreError as e:
                    print(e)
            store.corpus("news").link("bert_features", t.fingerprint)   # already the default: no write
            print("UNCHANGED")
        """)
        r = run_unprivileged(sys.executable, "-c", code)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert len(lines) == 4 and lines[3] == "UNCHANGED", lines
        assert all("Permission denied" in x and x.startswith(str(root)) for x in lines[:3]), lines
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(root)], check=True)
    assert orphan.exists()
    store = FeatureStore(root)
    assert_clean(store)
    assert all(np.array_equal(stored_vectors(root)[k], v) for k, v in before.items())


# == damaged files ==============================================================================
def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "bit-flipped":                  # one bit in the middle: the size stays the same
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(flipped))
    else:
        path.unlink()


REASON = {"truncated": "truncated", "bit-flipped": "sha256", "deleted": "missing"}


@pytest.mark.parametrize("how", ["truncated", "bit-flipped", "deleted"])
def test_damaged_feature_shard_is_named_and_never_read(store_copy, how):
    """One of three bert_features shards damaged: verify names it (exit 1); every read that
    needs it — lookup, corpus join, top-k, SQL, `query features`, `query sql` — fails with
    CorruptShard naming the file; rows of the intact shards still read back exactly."""
    root = store_copy
    store = FeatureStore(root)
    before = stored_vectors(root)
    t = store.open("bert_features")
    shards = t.manifest().shards
    assert len(shards) == 3
    victim = Path(t.shard_path(shards[1]))
    hit = t.read_shard(shards[1], ["text_sha"])["text_sha"].to_pylist()
    intact = t.read_shard(shards[0], ["text_sha"])["text_sha"].to_pylist()
    docs = store.corpus("news").read(columns=["doc_id", "text_sha"])
    doc_of = dict(zip(docs["text_sha"].to_pylist(), docs["doc_id"].to_pylist()))
    damage(victim, how)

    report = verify(store)
    assert [p for p, _ in report.bad] == [str(victim)] and REASON[how] in report.bad[0][1]
    r = cli(root, "verify")
    assert r.exit_code == 1 and str(victim) in one_line(r.stderr) and "1 bad" in r.stdout

    reads = {
        "lookup": lambda: lookup_vectors(store, "bert_features", hit[:2]),
        "corpus join": lambda: store.corpus_features("news", "bert_features"),
        "top-k": lambda: topk_cosine(store, "bert_features", np.ones((1, 32), np.float32), k=3),
        "sql": lambda: sql(store, "SELECT text_sha, vector FROM bert_features"),
        "sql by fingerprint": lambda: sql(store, f'SELECT vector FROM "bert_features@{t.fingerprint[:12]}"'),
    }
    for what, read in reads.items():
        with pytest.raises(CorruptShard) as e:
            read()
        assert e.value.path == str(victim), what
    for args in (["query", "features", "bert_features", "--corpus", "news", "--ids", doc_of[hit[0]]],
                 ["query", "features", "bert_features", "--ids", hit[0]],
                 ["query", "sql", "SELECT avg(vector[1]) FROM corpora.news JOIN bert_features USING (text_sha)"]):
        r = cli(root, *args)
        assert r.exit_code == EXIT_STORE and str(victim) in one_line(r.stderr), (args, r.output)
        assert "Traceback" not in r.output

    # Never a wrong vector: what can still be read is exactly what was committed.
    got = lookup_vectors(store, "bert_features", intact)
    assert np.array_equal(got, np.stack([before[doc_of[k]] for k in intact]))
    r = cli(root, "query", "features", "bert_features", "--ids", intact[0])
    assert r.exit_code == 0 and np.array_equal(json.loads(r.stdout)[0]["vector"], before[doc_of[intact[0]]])
    assert sql(store, "SELECT count(*) AS n FROM corpora.news")["n"].to_pylist() == [24]


@pytest.mark.parametrize("how", ["truncated", "bit-flipped", "deleted"])
def test_damaged_snapshot_is_named_and_never_read(store_copy, how):
    """The corpus's current snapshot damaged: verify names it; the corpus join, SQL over
    corpora.news and `query features --corpus` fail naming it; the feature table itself
    (which does not need it) still answers."""
    root = store_copy
    store = FeatureStore(root)
    corpus = store.corpus("news")
    victim = Path(corpus.snapshot_path(corpus.snapshot()))
    damage(victim, how)
    report = verify(store)
    assert [p for p, _ in report.bad] == [str(victim)] and REASON[how] in report.bad[0][1]
    for read in (lambda: corpus.read(), lambda: store.corpus_features("news", "bert_features"),
                 lambda: sql(store, "SELECT count(*) FROM corpora.news")):
        with pytest.raises(CorruptShard) as e:
            read()
        assert e.value.path == str(victim)
    r = cli(root, "query", "features", "bert_features", "--corpus", "news", "--ids", "money/000.txt")
    assert r.exit_code == EXIT_STORE and str(victim) in one_line(r.stderr)
    assert sql(store, "SELECT count(*) AS n FROM bert_features")["n"].to_pylist() == [24]


def test_flows_reading_a_damaged_table_fail_naming_the_file(store_copy, tiny_bert):
    """Flows read through the same checks: `featurize bert` over a damaged bert_tokens shard
    and `train head` over a damaged bert_features shard exit 2 naming the file; nothing is
    committed from the damaged input."""
    root = store_copy
    store = FeatureStore(root)
    tokens, features = store.open("bert_tokens"), store.open("bert_features")
    tokens_shard = Path(tokens.shard_path(tokens.manifest().shards[0]))
    damage(tokens_shard, "bit-flipped")
    r = cli(root, "featurize", "bert", "news", "--model", tiny_bert, "--max-length", str(MAX_LENGTH))
    assert r.exit_code == EXIT_STORE and str(tokens_shard) in one_line(r.stderr), r.output
    assert "sha256" in r.stderr
    feature_shard = Path(features.shard_path(features.manifest().shards[2]))
    damage(feature_shard, "bit-flipped")
    r = cli(root, "train", "head", "news", "--name", "topics")
    assert r.exit_code == EXIT_STORE and str(feature_shard) in one_line(r.stderr), r.output
    assert not store.models.exists("head", "topics")
    assert features.manifest().shards == store.open("bert_features").manifest().shards
    assert {p for p, _ in verify(store).bad} == {str(tokens_shard), str(feature_shard)}


def test_deleted_manifest_is_reported_then_recomputed(store_copy, tiny_bert):
    """bert_features' manifest deleted: the table no longer exists (what no manifest lists
    does not exist). verify names the current pointer that now points nowhere; reads say
    the table is missing; featurize recomputes every vector, equal to the lost ones; gc
    removes the old, now unlisted, shards."""
    root = store_copy
    store = FeatureStore(root)
    before = stored_vectors(root)
    t = store.open("bert_features")
    old_shards = [Path(t.shard_path(s)) for s in t.manifest().shards]
    Path(t.manifest_path).unlink()
    report = verify(store)
    assert report.bad == [(store.fs.path("tables", "bert_features", "current.json"),
                           f"names fingerprint {t.fingerprint[:12]}…, which has no manifest.json")]
    assert cli(root, "verify").exit_code == 1
    r = cli(root, "query", "features", "bert_features", "--corpus", "news", "--ids", "money/000.txt")
    assert r.exit_code == EXIT_STORE and "no committed manifest" in r.stderr
    r = cli(root, "featurize", "bert", "news", "--model", tiny_bert, "--max-length", str(MAX_LENGTH),
            "--shard-docs", "8")
    assert r.exit_code == 0 and "encoded 24 (cached 0)" in r.stdout, r.output
    after = stored_vectors(root)
    assert after.keys() == before.keys()
    np.testing.assert_allclose(np.stack([after[k] for k in before]), np.stack(list(before.values())), atol=1e-5)
    age_tree(root)
    removed = gc(store, grace_seconds=0).removed
    assert sorted(removed) == sorted(store.fs.relative(str(p)) for p in old_shards)
    assert_clean(store)


def test_damaged_manifests_specs_and_pointers_are_named(store_copy):
    """JSON files of the store damaged: a truncated manifest (verify names it; status and SQL
    exit 2 naming it), a checksum changed inside a manifest (the shard no longer matches),
    a spec edited so it no longer hashes to its fingerprint, a truncated current pointer."""
    root = store_copy
    store = FeatureStore(root)
    tokens, features, documents = store.open("bert_tokens"), store.open("bert_features"), store.open("documents")

    text = Path(tokens.manifest_path).read_text()
    Path(tokens.manifest_path).write_text(text[: len(text) // 2])
    m = json.loads(Path(features.manifest_path).read_text())
    m["shards"][0]["sha256"] = ("0" if m["shards"][0]["sha256"][0] != "0" else "1") + m["shards"][0]["sha256"][1:]
    Path(features.manifest_path).write_text(json.dumps(m))
    spec_path = Path(documents.dir) / "spec.json"
    s = json.loads(spec_path.read_text())
    s["spec"]["config"]["normalization"] = "NFKC"
    spec_path.write_text(json.dumps(s))
    pointer = Path(store.fs.path("tables", "bert_tokens", "current.json"))
    pointer.write_text(pointer.read_text()[:10])

    bad = dict(verify(store).bad)
    assert set(bad) == {tokens.manifest_path, features.shard_path(m["shards"][0]["file"]), str(spec_path),
                        str(pointer)}, bad
    assert "not valid JSON" in bad[tokens.manifest_path]
    assert "sha256" in bad[features.shard_path(m["shards"][0]["file"])]
    assert "does not hash" in bad[str(spec_path)]
    assert "not valid JSON" in bad[str(pointer)]
    r = cli(root, "verify")
    assert r.exit_code == 1 and all(p in one_line(r.stderr) for p in bad)
    r = cli(root, "status")                 # the damaged tables marked, the rest shown (issue 18)
    assert r.exit_code == 1 and "Traceback" not in r.output and "DAMAGED" in r.output, r.output
    assert tokens.manifest_path in one_line(r.stderr) and "documents" in r.stdout
    for args in (["query", "sql", "SELECT count(*) FROM bert_features"],):
        r = cli(root, *args)
        assert r.exit_code == EXIT_STORE and "Traceback" not in r.output, (args, r.output)
    # A lookup locates keys through every shard's key column: the mismatching shard stops it.
    r = cli(root, "query", "features", "bert_features", "--ids", sha(0))
    assert r.exit_code == EXIT_STORE and features.shard_path(m["shards"][0]["file"]) in one_line(r.stderr), r.output
