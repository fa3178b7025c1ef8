"""Ingest's change detection: unchanged files are not read again, and the snapshot is the
one a full read (IngestConfig(rescan=True)) gives."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from embcache.pipeline.configs import IngestConfig, Source
from embcache.stages.ingest import ingest_corpus
from embcache.storage import FeatureStore

HOUR_AGO = time.time() - 3600


def write(path, lines: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    os.utime(path, (HOUR_AGO, HOUR_AGO))       # not "racy": modified well before the ingest's stat
    return str(path)


def overwrite_in_place(path, text: str) -> None:
    """New bytes, same size, inode and mtime: what change detection cannot see (and says so)."""
    st = os.stat(path)
    data = path.read_bytes()
    new = data.replace(b"alpha", text.encode())
    assert len(new) == len(data)
    with open(path, "r+b") as f:
        f.write(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def snapshot_rows(root, corpus="c"):
    return FeatureStore(root).corpus(corpus).read().to_pylist()


def test_unchanged_sources_are_not_read_and_rescan_reads_them(tmp_path):
    src = tmp_path / "src"
    write(src / "a.jsonl", [{"text": "alpha one"}, {"text": ""}])
    write(src / "b.jsonl", [{"text": "beta"}])
    source, root = Source(str(src / "*.jsonl")), str(tmp_path / "store")
    first = ingest_corpus(root, "c", [source], IngestConfig())
    overwrite_in_place(src / "a.jsonl", "gamma")
    again = ingest_corpus(root, "c", [source], IngestConfig())
    assert (again.snapshot, again.documents, again.rejected, again.new_texts) == \
        (first.snapshot, first.documents, first.rejected, 0)     # nothing read
    texts = FeatureStore(root).open("documents").read(["text"])["text"].to_pylist()
    assert "gamma one" not in texts
    rescanned = ingest_corpus(root, "c", [source], IngestConfig(rescan=True))
    assert rescanned.snapshot != first.snapshot and rescanned.new_texts == 1
    assert rescanned.rejected == {"empty_text": 1}


def test_a_changed_file_is_read_and_the_snapshot_matches_a_full_read(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        write(src / f"d{i}" / "part.jsonl", [{"text": f"doc {i} {j}", "label": "x"} for j in range(3)]
              + [{"text": None}])
    source = Source(str(src), format="jsonl", label_column="label")
    root = str(tmp_path / "store")
    ingest_corpus(root, "c", [source], IngestConfig())
    write(src / "d1" / "part.jsonl", [{"text": "edited", "label": "y"}, {"text": 7}])   # changed
    write(src / "d9" / "part.jsonl", [{"text": "new file", "label": "x"}])            # added
    (src / "d2" / "part.jsonl").unlink()                                               # removed
    changed = ingest_corpus(root, "c", [source], IngestConfig())
    full = ingest_corpus(str(tmp_path / "full"), "c", [source], IngestConfig(rescan=True))
    assert changed.new_texts == 2 and changed.documents == full.documents == 8
    assert changed.rejected == full.rejected == {"null_text": 2, "not_string": 1}
    assert snapshot_rows(root) == snapshot_rows(str(tmp_path / "full"))
    assert FeatureStore(root).corpus("c").snapshot().stats["content_sha256"] == \
        FeatureStore(str(tmp_path / "full")).corpus("c").snapshot().stats["content_sha256"]


def test_an_unchanged_file_whose_ids_now_collide_is_read_again(tmp_path):
    src = tmp_path / "src"
    write(src / "a.jsonl", [{"id": "1", "text": "first"}])
    write(src / "b.jsonl", [{"id": "2", "text": "second"}])
    source = Source(str(src / "*.jsonl"), id_column="id")
    root = str(tmp_path / "store")
    ingest_corpus(root, "c", [source], IngestConfig())
    write(src / "a.jsonl", [{"id": "1", "text": "first"}, {"id": "2", "text": "taken first"}])
    changed = ingest_corpus(root, "c", [source], IngestConfig())
    full = ingest_corpus(str(tmp_path / "full"), "c", [source], IngestConfig(rescan=True))
    assert changed.rejected == full.rejected == {"duplicate_id_conflict": 1}
    assert snapshot_rows(root) == snapshot_rows(str(tmp_path / "full"))


def test_other_options_read_every_file(tmp_path):
    src = tmp_path / "src"
    write(src / "a.jsonl", [{"text": "alpha", "topic": "t"}])
    root = str(tmp_path / "store")
    ingest_corpus(root, "c", [Source(str(src / "a.jsonl"))], IngestConfig())
    overwrite_in_place(src / "a.jsonl", "omega")
    labelled = ingest_corpus(root, "c", [Source(str(src / "a.jsonl"), label_column="topic")], IngestConfig())
    assert labelled.new_texts == 1 and snapshot_rows(root)[0]["label"] == "t"


def test_the_summary_counts_files_added_edited_removed_and_unchanged(tmp_path):
    src = tmp_path / "src"
    for name in "abcd":
        write(src / f"{name}.jsonl", [{"text": f"doc {name}"}])
    source, root = Source(str(src / "*.jsonl")), str(tmp_path / "store")
    first = ingest_corpus(root, "c", [source], IngestConfig())
    assert counts(first) == (4, 0, 0, 0, 0)
    assert counts(ingest_corpus(root, "c", [source], IngestConfig())) == (0, 0, 0, 4, 0)
    write(src / "b.jsonl", [{"text": "doc b, edited"}])
    write(src / "e.jsonl", [{"text": "doc e"}])
    (src / "c.jsonl").unlink()
    changed = ingest_corpus(root, "c", [source], IngestConfig())
    assert counts(changed) == (1, 1, 1, 2, 0) and changed.objects == 0
    assert counts(ingest_corpus(root, "c", [source], IngestConfig(rescan=True))) == (0, 0, 0, 0, 4)


def counts(summary) -> tuple:
    return (summary.files_added, summary.files_edited, summary.files_removed, summary.files_unchanged,
            summary.files_reread)


def state_file(root, corpus="c"):
    store = FeatureStore(root)
    return store.fs.path("corpora", corpus, "sources", store.corpus(corpus).manifest().current.file)


def test_a_version_1_state_file_is_still_read_and_an_unknown_one_means_read_everything(tmp_path):
    import pyarrow.parquet as pq
    src = tmp_path / "src"
    write(src / "a.jsonl", [{"text": "alpha"}])
    source, root = Source(str(src / "a.jsonl")), str(tmp_path / "store")
    ingest_corpus(root, "c", [source], IngestConfig())
    path = state_file(root)
    table = pq.read_table(path)
    meta = table.schema.metadata
    assert meta[b"format_version"] == b"2" and table.column_names[-1] == "version"
    pq.write_table(table.drop_columns(["version"]).replace_schema_metadata({**meta, b"format_version": b"1"}), path)
    overwrite_in_place(src / "a.jsonl", "omega")           # not read: the version 1 record says unchanged
    assert counts(ingest_corpus(root, "c", [source], IngestConfig())) == (0, 0, 0, 1, 0)
    pq.write_table(table.replace_schema_metadata({**meta, b"format_version": b"99"}), path)
    again = ingest_corpus(root, "c", [source], IngestConfig())
    assert counts(again) == (1, 0, 0, 0, 0) and again.new_texts == 1      # no state: read once
    Path(state_file(root)).write_bytes(b"not parquet")
    assert ingest_corpus(root, "c", [source], IngestConfig()).files_added == 1
