"""Ingest's change detection: unchanged files are not read again, and the snapshot is the
one a full read (IngestConfig(rescan=True)) gives."""

from __future__ import annotations

import json
import os
import time

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
