"""Issue 17: ids across several sources, source encodings, labels with no effect, one label rule."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from embcache.pipeline.errors import IngestOptionError, PipelineError
from embcache.pipeline.ingest import IngestConfig, Source, check_ingest, ingest

from .test_ingest import run, write



# ---------------------------------------------------------------- ids across sources


def test_directories_with_the_same_file_names_keep_every_document(tmp_path, monkeypatch):
    for year in ("2024", "2025"):
        write(tmp_path / "inbox" / year / "part-00000.jsonl",
              "".join(json.dumps({"text": f"{year} doc {i}"}) + "\n" for i in range(3)))
    monkeypatch.chdir(tmp_path)

    def ids(*paths: str) -> list[str]:
        docs, rejected = run(*(Source(p) for p in paths))
        assert rejected == []
        return [d["doc_id"] for d in docs]

    both = ids("inbox/2024", "inbox/2025")
    assert both == [f"{y}/part-00000.jsonl:{i}" for y in ("2024", "2025") for i in (1, 2, 3)]
    assert ids(str(tmp_path / "inbox" / "2024"), "./inbox/2025/") == both    # absolute or relative
    assert ids("inbox/2024") == [f"part-00000.jsonl:{i}" for i in (1, 2, 3)]  # one source: as before


def test_two_globs_with_the_same_file_names(tmp_path):
    for d in ("d1", "d2"):
        write(tmp_path / d / "a.txt", f"{d} a\n")
        write(tmp_path / d / "b.txt", f"{d} b\n")
    docs, rejected = run(Source(str(tmp_path / "d1" / "*.txt")), Source(str(tmp_path / "d2" / "*.txt")))
    assert rejected == []
    assert [d["doc_id"] for d in docs] == ["d1/a.txt:1", "d1/b.txt:1", "d2/a.txt:1", "d2/b.txt:1"]


def test_id_prefix_overrides_the_source_qualifier(tmp_path):
    write(tmp_path / "x" / "a.txt", "one\n")
    write(tmp_path / "y" / "a.txt", "two\n")
    docs, _ = run(Source(str(tmp_path / "x"), id_prefix="old:"), Source(str(tmp_path / "y")))
    assert [d["doc_id"] for d in docs] == ["old:a.txt:1", "y/a.txt:1"]


# ---------------------------------------------------------------- encodings


CP1252 = "café – naïve “quoted” €5"          # – “ ” € are cp1252-only (not latin-1)


@pytest.mark.parametrize("fmt", ["lines", "files", "folder", "csv", "jsonl"])
@pytest.mark.parametrize("encoding", ["cp1252", "utf-16"])
def test_every_text_format_reads_the_source_encoding(tmp_path, fmt, encoding):
    content = {"lines": f"{CP1252}\nsecond\n", "files": CP1252, "folder": CP1252,
               "csv": f'text,label\n"{CP1252}",x\nsecond,x\n',
               "jsonl": json.dumps({"text": CP1252, "label": "x"}, ensure_ascii=False) + "\n"
                        + json.dumps({"text": "second", "label": "x"}) + "\n"}[fmt]
    name = {"lines": "d.txt", "files": "d.txt", "folder": "x/d.txt", "csv": "d.csv", "jsonl": "d.jsonl"}[fmt]
    path = write(tmp_path / "src" / name, content.encode(encoding))
    source = Source(str(path if fmt in ("csv", "jsonl", "lines") else tmp_path / "src"),
                    format="auto" if fmt != "files" else "files", encoding=encoding,
                    label_column="label" if fmt in ("csv", "jsonl") else None)
    docs, rejected = run(source)
    assert rejected == []
    assert docs[0]["text"] == CP1252
    assert [d["text"] for d in docs[1:]] == ([] if fmt in ("files", "folder") else ["second"])


def test_bytes_invalid_in_the_given_encoding_cost_their_record_only(tmp_path):
    write(tmp_path / "c.txt", b"ok\nbad \x81 byte\nfine\n")            # 0x81: undefined in cp1252
    docs, rejected = run(Source(str(tmp_path / "c.txt"), encoding="cp1252"))
    assert [d["text"] for d in docs] == ["ok", "fine"]
    assert [(r["row"], r["reason"]) for r in rejected] == [(2, "invalid_utf8")]
    assert "cp1252" in rejected[0]["detail"]
    write(tmp_path / "u.txt", "ok\n".encode("utf-16-le") + b"\x00\xd8" + "\nfine\n".encode("utf-16-le"))
    docs, rejected = run(Source(str(tmp_path / "u.txt"), encoding="utf-16-le"))
    assert [d["text"] for d in docs] == ["ok", "fine"] and [r["row"] for r in rejected] == [2]
    assert "utf-16-le" in rejected[0]["detail"]


def test_invalid_utf8_says_which_encodings_decode_the_file(tmp_path):
    write(tmp_path / "w.csv", "text\ncafé €5\n".encode("cp1252"))
    _, rejected = run(Source(str(tmp_path / "w.csv")))
    detail = rejected[0]["detail"]
    assert rejected[0]["reason"] == "invalid_utf8"
    assert "decodes as cp1252:" in detail and "--encoding cp1252" in detail    # 0x80 is a control in latin-1
    assert 'encoding = "cp1252"' in detail
    write(tmp_path / "l.txt", "café\n".encode("latin-1"))
    assert "decodes as cp1252 or latin-1:" in run(Source(str(tmp_path / "l.txt")))[1][0]["detail"]


def test_utf16_bom_without_an_encoding_is_reported_with_the_option(tmp_path):
    write(tmp_path / "u.txt", "hello\nworld\n".encode("utf-16"))
    docs, rejected = run(Source(str(tmp_path / "u.txt")))
    assert docs == [] and {r["reason"] for r in rejected} == {"binary_content"}
    assert "UTF-16-LE" in rejected[0]["detail"] and "--encoding utf-16" in rejected[0]["detail"]


@pytest.mark.parametrize("name", ["no-such-codec", "base64"])
def test_unknown_encoding_is_an_error_naming_it(name):
    with pytest.raises(PipelineError, match=repr(name)):
        Source("x.txt", encoding=name)


def test_encoding_on_parquet_has_no_effect_and_is_an_error():
    with pytest.raises(IngestOptionError, match="--encoding"):
        check_ingest([Source("d.parquet", encoding="cp1252")], IngestConfig())


# ---------------------------------------------------------------- labels


def test_labels_without_a_label_column_fail_before_reading(tmp_path):
    missing = Source(str(tmp_path / "never-read.csv"))               # would be SourceNotFound
    with pytest.raises(IngestOptionError, match="--labels"):
        ingest([missing], IngestConfig(labels=("a", "b")))
    check_ingest([missing, Source(str(tmp_path), format="folder")], IngestConfig(labels=("a",)))


def test_store_ingest_checks_options_first(tmp_path):
    from embcache.stages.ingest import ingest_corpus
    with pytest.raises(IngestOptionError, match="labels"):
        ingest_corpus(str(tmp_path / "store"), "c", [Source(str(tmp_path / "x.txt"))],
                      IngestConfig(labels=("a",)))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "folder"])
def test_label_outside_the_declared_set_is_rejected(tmp_path, fmt):
    if fmt == "folder":
        write(tmp_path / "src" / "a" / "1.txt", "in")
        write(tmp_path / "src" / "z" / "1.txt", "out")
        source = Source(str(tmp_path / "src"))
    elif fmt == "csv":
        source = Source(str(write(tmp_path / "d.csv", "text,label\nin,a\nout,z\n")), label_column="label")
    else:
        source = Source(str(write(tmp_path / "d.jsonl", '{"text": "in", "label": "a"}\n'
                                                        '{"text": "out", "label": "z"}\n')),
                        label_column="label")
    docs, rejected = run(source, labels=("a", "b"))
    assert [d["text"] for d in docs] == ["in"]
    assert [r["reason"] for r in rejected] == ["label_not_allowed"]


def test_csv_jsonl_and_parquet_give_the_same_strings(tmp_path):
    frame = pd.DataFrame({
        "text": ["t1", "t2", "t3", "t4"],
        "label": [2.0, 0.5, 3.0, -1.0],                        # floats, integral or not
        "id": [10, 11, 12, 13],
        "split": [True, False, True, False],
    })
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    assert "2.0" in (tmp_path / "d.csv").read_text() and "True" in (tmp_path / "d.csv").read_text()
    seen = []
    for name in ("d.csv", "d.jsonl", "d.parquet"):
        docs, rejected = run(Source(str(tmp_path / name), label_column="label", id_column="id",
                                    split_column="split"), labels=(2, 0.5, 3, -1))
        assert rejected == []
        seen.append([(d["doc_id"], d["label"], d["split"]) for d in docs])
    assert seen[0] == seen[1] == seen[2] == [
        ("10", "2", "true"), ("11", "0.5", "false"), ("12", "3", "true"), ("13", "-1", "false")]


def test_check_source_opens_only_the_first_file(tmp_path):
    """The CLI's check before a flow starts: a missing column is found in the first file, and
    the rest are only listed (ingest checks each as it reads it)."""
    from embcache.pipeline.errors import SourceSchemaError, SourceNotFound
    from embcache.pipeline.sources import Source, check_source
    (tmp_path / "a.csv").write_text("text\nfine\n")
    (tmp_path / "b.csv").write_text("body\nno text column here\n")
    check_source(Source(str(tmp_path / "*.csv")))             # b.csv is not opened
    with pytest.raises(SourceSchemaError, match="--text-column"):
        check_source(Source(str(tmp_path / "b.csv")))
    with pytest.raises(SourceNotFound):
        check_source(Source(str(tmp_path / "none-*.csv")))
