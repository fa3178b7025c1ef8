"""Sources in an object store (pipeline/objects.py): fsspec's memory:// filesystem stands in
for S3 here (the same listing and reading code; tests/flows/test_s3_sources.py runs moto's S3).

The rule under test: an object source gives the rows a local copy of it gives — the same ids,
texts, rejects and details — with the object's URL as each row's `source`.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embcache.pipeline.errors import SourceNotFound, SourceSchemaError, SourceUnavailable
from embcache.pipeline.ingest import IngestConfig, Source, ingest
from embcache.pipeline.sources import check_source, plan_files


@pytest.fixture
def bucket():
    """A fresh memory:// prefix, removed afterwards (the memory filesystem is process-wide)."""
    fs = fsspec.filesystem("memory")
    root = f"/t-{uuid.uuid4().hex[:8]}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def mirror(local: Path, bucket) -> str:
    """Copy every file under `local` to the bucket; the URL of the copy."""
    fs, root = bucket
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{root}/{path.relative_to(local).as_posix()}", path.read_bytes())
    return f"memory://{root}"


def rows(source: Source, **config) -> tuple[list[dict], list[dict]]:
    """(documents, rejects) of `source`, each row without its `source` (a path or a URL)."""
    batch = ingest([source], IngestConfig(**config))
    return ([{k: v for k, v in r.items() if k != "source"} for r in batch.documents.to_pylist()],
            [{k: v for k, v in r.items() if k != "source"} for r in batch.rejected.to_pylist()])


def corpus(root: Path) -> Path:
    """A little of everything ingest treats specially, under root/src."""
    src = root / "src"
    files = {
        "news/2024/a.jsonl": b'{"text": "caf\xc3\xa9 one", "label": 1}\n\n{"text": "caf\xe9"}\r\n{"label": "x"}\n',
        "news/2025/b.jsonl": b'{"text": "two"}\r{"text": "three", "label": 2.0}',
        "news/.hidden/c.jsonl": b'{"text": "never read"}\n',
        "news/2025/bin.jsonl": b'{"text": "x"}\x00\n{"text": "y"}\n',
        "lines/a.txt": "one\r\ntwo\n\n   \nthree".encode(),
        "lines/cp.txt": "caf\u00e9 \u2013 \u20ac5\n".encode("cp1252"),
        "utf16/a.txt": "caf\u00e9\r\nna\u00efve\n".encode("utf-16") + b"\x00\xd8",   # then a lone surrogate
        "table/a.csv": b'text,label\nhello,1\n"caf\xe9",2\nx,y,z\n',
        "docs/a.md": b"doc one\r\nline two",
        "docs/b.md": b"x" * 600,                        # > 5 x max_bytes 100: too_large, unread
        "docs/c.md": b"PK\x03\x04" + b"\x00" * 40,      # a zip by its first bytes: unread
        "folder/pos/1.txt": b"good", "folder/neg/deep/2.txt": b"bad", "folder/README": b"not a document",
    }
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    pq.write_table(pa.table({"text": ["p1", "p2"], "label": ["a", None]}), src / "table" / "p.parquet")
    return src


@pytest.mark.parametrize("pattern, options", [
    ("news/**/*.jsonl", {"label_column": "label"}),
    ("news", {"format": "jsonl"}),
    ("lines/*.txt", {}),
    ("lines/cp.txt", {"encoding": "cp1252"}),
    ("utf16/a.txt", {"encoding": "utf-16"}),
    ("utf16/a.txt", {}),                              # UTF-8 expected: binary, its BOM named
    ("table/a.csv", {"label_column": "label"}),
    ("table/p.parquet", {"label_column": "label"}),
    ("docs", {"format": "files"}),
    ("folder", {}),                                   # auto: a prefix with folders is a folder source
])
def test_an_object_source_reads_as_its_local_copy(tmp_path, bucket, pattern, options):
    src = corpus(tmp_path)
    url = mirror(src, bucket)
    local = rows(Source(str(src / pattern), **options), max_bytes=100)
    remote = rows(Source(f"{url}/{pattern}", **options), max_bytes=100)
    assert remote == local
    assert local[0] or local[1]                       # something was read
    docs, rejected = remote
    if pattern == "news/**/*.jsonl":
        assert [d["doc_id"] for d in docs] == ["2024/a.jsonl:1", "2025/b.jsonl:1", "2025/b.jsonl:2"]
        assert "reads as UTF-8" in next(r["detail"] for r in rejected if r["reason"] == "invalid_utf8")   # a hint, probed through the object
        assert {r["doc_id"] for r in rejected if r["reason"] == "binary_content"} == \
            {"2025/bin.jsonl:1", "2025/bin.jsonl:2"}
    if pattern == "utf16/a.txt" and options:
        assert [d["text"] for d in docs] == ["caf\u00e9", "na\u00efve"] and rejected[0]["reason"] == "invalid_utf8"
    if pattern == "utf16/a.txt" and not options:
        assert docs == [] and "pass --encoding utf-16" in rejected[0]["detail"]
    if pattern == "docs":
        assert {r["doc_id"]: r["reason"] for r in rejected} == {"b.md": "too_large", "c.md": "binary_content"}
        assert docs[0]["text"] == "doc one\nline two"
    if pattern == "folder":
        assert [(d["doc_id"], d["label"]) for d in docs] == [("neg/deep/2.txt", "neg"), ("pos/1.txt", "pos")]


def test_object_rows_name_their_url(bucket):
    fs, root = bucket
    fs.pipe_file(f"{root}/in/a.jsonl", b'{"text": "x"}\n{"text": 1}\n')
    batch = ingest([Source(f"memory://{root}/in/*.jsonl")])
    assert batch.documents["source"].to_pylist() == [f"memory://{root}/in/a.jsonl"]
    assert batch.rejected.to_pylist()[0]["source"] == f"memory://{root}/in/a.jsonl"


def test_ids_of_several_sources_are_relative_to_the_folder_holding_them(tmp_path, bucket):
    fs, root = bucket
    for year in ("2024", "2025"):
        fs.pipe_file(f"{root}/inbox/{year}/part-0.jsonl", json.dumps({"text": f"{year} doc"}).encode())
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "part-0.jsonl").write_text(json.dumps({"text": "local doc"}))
    both = ingest([Source(f"memory://{root}/inbox/2024"), Source(f"memory://{root}/inbox/2025/")])
    assert both.documents["doc_id"].to_pylist() == ["2024/part-0.jsonl:1", "2025/part-0.jsonl:1"]
    one = ingest([Source(f"memory://{root}/inbox/2024/part-0.jsonl")])
    assert one.documents["doc_id"].to_pylist() == ["part-0.jsonl:1"]
    mixed = ingest([Source(f"memory://{root}/inbox/2024"), Source(str(tmp_path / "local"))])
    ids = mixed.documents["doc_id"].to_pylist()            # the folder holding both is "/": kept apart
    assert ids[0] == f"memory:{root}/inbox/2024/part-0.jsonl:1" and ids[1].endswith("local/part-0.jsonl:1")


def test_planning_lists_once_and_knows_each_objects_size_and_version(bucket):
    fs, root = bucket
    fs.pipe_file(f"{root}/a.txt", b"one\n")
    fs.pipe_file(f"{root}/sub/b.txt", b"two two\n")
    files = plan_files(Source(f"memory://{root}/**/*.txt"))
    assert [(f.rel, f.base, f.object.size) for f in files] == \
        [("a.txt", f"memory://{root}", 4), ("sub/b.txt", f"memory://{root}", 8)]
    assert all(f.object.mtime_ns > 0 for f in files)


def test_missing_objects_columns_and_filesystems_are_one_clear_error(bucket):
    fs, root = bucket
    fs.pipe_file(f"{root}/a.csv", b"text\nfine\n")
    fs.pipe_file(f"{root}/b.csv", b"body\nno text column\n")
    check_source(Source(f"memory://{root}/*.csv"))          # only a.csv is opened
    with pytest.raises(SourceSchemaError, match=r"b\.csv: no column 'text' \(--text-column"):
        check_source(Source(f"memory://{root}/b.csv"))
    with pytest.raises(SourceNotFound, match="matches no object"):
        check_source(Source(f"memory://{root}/none-*.csv"))
    with pytest.raises(SourceNotFound, match="matches no object"):
        check_source(Source(f"memory://{root}/nothing-here"))
    with pytest.raises(SourceUnavailable, match="not a filesystem fsspec knows"):
        check_source(Source("nosuchproto://bucket/x.jsonl"))
    with pytest.raises(SourceNotFound, match="cannot name the bucket"):
        check_source(Source("memory://*/x.jsonl"))


def test_one_document_objects_are_fetched_in_groups_and_keep_their_order(tmp_path, bucket):
    from embcache.pipeline.ingest import iter_ingest
    for i in range(5):
        (tmp_path / "docs" / f"{i}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "docs" / f"{i}.txt").write_text(f"document {i}\r\n")
    url = mirror(tmp_path / "docs", bucket)

    def texts(path: str) -> list[tuple]:
        return [(d["doc_id"], d["text"]) for b in iter_ingest([Source(path, format="files")], batch_rows=2)
                for d in b.documents.to_pylist()]
    assert texts(url) == texts(str(tmp_path / "docs")) == [(f"{i}.txt", f"document {i}\n") for i in range(5)]
