"""Bad input through the real ingest (CLI or Prefect flow) into a real store.

Every corpus here is ingested by `embcache ingest` (typer's runner, in-process) or by
`flows.featurize_flows.ingest_flow`, then read back from the store: the snapshot's
documents joined with their texts, and the `rejected` table through the SQL surface.
Each test checks the same accounting (`check_accounting`): every input row is either
accepted or rejected, exactly once, and each rejected row names its file, row and reason.

Decisions pinned here (what bad input becomes):
- Text must be UTF-8, byte for byte; nothing is guessed. A Latin-1 / cp1252 line with a
  non-ASCII byte is rejected (invalid_utf8, naming the byte); its ASCII-only lines are
  accepted (they are the same text in any of these encodings). Latin-1 bytes that happen
  to form valid UTF-8 ("Ã©" saved as Latin-1 is the UTF-8 of "é") are read as UTF-8.
- A lines / JSONL / CSV file with a NUL byte in its first 8,000 bytes is binary (git's
  rule): PNGs, UTF-16 and UTF-32 files (the BOM is named). Each of its lines is one
  rejected row (binary_content); none is parsed, so no fragment of a binary file becomes
  a document. A NUL further on costs its own line only.
- A file that `datasets` would decompress (a .zip/.gz/... name, or zip/gzip/... first
  bytes: .docx, .xlsx) is one rejected row (binary_content), unread, in every format.
- One-document files (--format files / folder) are one row each: a PNG is invalid_utf8
  (its first bad byte), a NUL-containing file binary_content.
- Structurally broken files that have no rows to count fail the run with exit 2 and the
  file's name, committing nothing: a CSV with an unterminated quote, a corrupt Parquet file.
- Labels of mixed types: see test_mixed_type_labels_become_strings_one_way.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import struct
import unicodedata
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from embcache.cli.main import app
from embcache.stages.ingest import ingest_corpus
from embcache.pipeline.ingest import RECORD_REJECT_REASONS, REJECT_REASONS, IngestConfig, Source
from embcache.storage import FeatureStore
from embcache.storage.query import sql

runner = CliRunner()


@pytest.fixture(scope="module")
def prefect_engine():
    """One real Prefect engine (temporary server + database) for this module's flow runs."""
    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness(server_startup_timeout=120):
        yield


pytestmark = pytest.mark.usefixtures("prefect_engine")


# ---------------------------------------------------------------- helpers


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def lines_in(data: bytes) -> int:
    """Rows a lines/JSONL file holds: its lines with universal newlines (CRLF, LF, lone CR)."""
    return len(io.StringIO(data.decode("latin-1"), newline=None).readlines())


def cli_ingest(store: Path, corpus: str, *args: str):
    """`embcache --store STORE ingest CORPUS ARGS...`; nothing may crash (only exit codes)."""
    r = runner.invoke(app, ["--store", str(store), "ingest", corpus, *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    return r


def flow_ingest(store: Path, corpus: str, sources: list[Source],
                config: IngestConfig = IngestConfig()):
    from embcache.flows.featurize_flows import ingest_flow
    return ingest_flow(corpus, sources, config, store=str(store))


@dataclass
class Ingested:
    docs: list[dict]        # the snapshot's rows with their text:
                            # doc_id, text_sha, text, label, split, source, row
    rejected: list[dict]    # the rejected table's rows of the corpus: source, row, doc_id, reason, detail
    stats: dict             # the snapshot's stats (documents, rejected counts per reason)

    def by_row(self, path: Path) -> dict[int, str]:
        """row -> "ok" or the reject reason, for one file."""
        return {**{d["row"]: "ok" for d in self.docs if d["source"] == str(path)},
                **{r["row"]: r["reason"] for r in self.rejected if r["source"] == str(path)}}

    def texts(self, path: Path) -> dict[int, str]:
        return {d["row"]: d["text"] for d in self.docs if d["source"] == str(path)}

    def detail(self, path: Path, row: int) -> str:
        return next(r["detail"] for r in self.rejected if r["source"] == str(path) and r["row"] == row)


def read_back(store: Path, corpus: str) -> Ingested:
    fs = FeatureStore(str(store))
    docs = fs.corpus_features(corpus, "documents").to_pylist()
    rejected = []
    if any(t.name == "rejected" and t.shards for t in fs.tables()):
        rejected = sql(fs, "SELECT r.source, r.row, r.doc_id, r.reason, r.detail FROM rejected r "
                           "JOIN embcache_snapshots s USING (corpus, snapshot) "
                           f"WHERE s.current AND r.corpus = '{corpus}' ORDER BY r.source, r.row").to_pylist()
    return Ingested(docs, rejected, fs.corpus(corpus).manifest().current.stats)


def check_accounting(result: Ingested, inputs: dict[Path, int]) -> None:
    """accepted + rejected == input rows, per file and in all; each row exactly once; each
    rejected row names an existing file, its row and a known reason with a detail; accepted
    texts are normalized (no BOM, no CR, NFC) and hashed as such."""
    seen = Counter((d["source"], d["row"]) for d in result.docs)
    seen.update((r["source"], r["row"]) for r in result.rejected)
    assert max(seen.values(), default=1) == 1, [k for k, n in seen.items() if n > 1][:5]
    for path, rows in inputs.items():
        assert sorted(row for source, row in seen if source == str(path)) == list(range(1, rows + 1)), path
    assert set(source for source, _ in seen) == {str(p) for p in inputs if inputs[p]}
    assert len(result.docs) + len(result.rejected) == sum(inputs.values())
    for r in result.rejected:
        assert os.path.isfile(r["source"]) and r["row"] >= 1, r
        assert r["reason"] in REJECT_REASONS and r["detail"], r
    assert result.stats["documents"] == len(result.docs)
    assert result.stats["rejected"] == dict(Counter(r["reason"] for r in result.rejected))
    for d in result.docs:
        text = d["text"]
        assert not text.startswith("\ufeff") and "\r" not in text and unicodedata.is_normalized("NFC", text)
        assert d["text_sha"] == hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_cli_summary(r, result: Ingested, inputs: int) -> None:
    assert r.exit_code == (3 if result.rejected else 0), r.output
    assert f"{len(result.rejected):,} rejected of {inputs:,} rows" in " ".join(r.output.split())


def png_bytes(seed: int = 0) -> bytes:
    """A small real PNG (16x16 RGB noise): signature, IHDR, IDAT, IEND."""
    rng = random.Random(seed)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(48)) for _ in range(16))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


# ---------------------------------------------------------------- every reason


def test_every_reject_reason_in_jsonl_csv_and_parquet_through_the_cli(tmp_path):
    jsonl_lines = [json.dumps(x).encode() for x in [
        {"id": "j1", "text": "kept", "label": "x"},                       # 1 ok
        "{oops",                                                          # 2 malformed_record (a JSON string)
        {"id": "j3", "text": None},                                       # 3 null_text
        {"id": "j4", "text": 3.5},                                        # 4 not_string
        {"id": "j5", "text": " \t "},                                     # 5 empty_text
        {"id": "j6", "text": "a\u0000b"},                                 # 6 binary_content (escaped NUL)
        {"id": "j7", "text": "é" * 6},                                    # 7 too_large: 12 bytes > 10
        {"id": "", "text": "no id"},                                      # 8 missing_id
        {"id": "j9", "text": "t", "split": {"a": 1}},                     # 9 invalid_field
        {"id": "j10", "text": "t", "label": "zzz"},                       # 10 label_not_allowed
        {"id": "j1", "text": "other"},                                    # 11 duplicate_id_conflict
        {"id": "j1", "text": "kept", "label": "x"},                       # 12 duplicate_row
    ]] + [b'{"id": "j13", "text": "bad \xff"}',                           # 13 invalid_utf8
          b"{oops",                                                       # 14 malformed_record
          json.dumps({"id": "j15", "text": "fine", "label": "y", "split": "test"}).encode()]   # 15 ok
    jsonl = write(tmp_path / "in" / "r.jsonl", b"\n".join(jsonl_lines) + b"\n")
    csv = write(tmp_path / "in" / "r.csv", b"id,text,label,split\n"
                                           b"c1,hello,x,train\n"          # 1 ok
                                           b"c2,x,y,train,EXTRA\n"        # 2 malformed_record
                                           b"c3\n"                        # 3 null_text (short row)
                                           b"c4,,x,train\n"               # 4 empty_text
                                           b"c5,caf\xe9,x,train\n"        # 5 invalid_utf8
                                           + "c6,éééééé,x,train\n".encode() +   # 6 too_large
                                           b",no id,x,train\n"            # 7 missing_id
                                           b"c8,t,zzz,train\n"            # 8 label_not_allowed
                                           b"j15,different,y,test\n"      # 9 duplicate_id_conflict (j15)
                                           b"c1,hello,x,train\n"          # 10 duplicate_row
                                           b'c11,"multi\r\nline",y,train\n')   # 11 ok
    texts = pa.array([b"parquet ok", None, b"bad \xff", b"", b"a\x00b", "éééééé".encode(), b"t", b"t",
                      b"third", b"parquet ok"], pa.binary()).view(pa.string())
    parquet = tmp_path / "in" / "r.parquet"
    ids = ["p1", "p2", "p3", "p4", "p5", "p6", None, "p8", "j1", "p1"]
    pq.write_table(pa.table({"id": ids, "text": texts,
                             "label": ["y", "x", "x", "x", "x", "x", "x", "zzz", "x", "y"],
                             "split": ["train"] * 10}), parquet)
    numeric = tmp_path / "in" / "numeric.parquet"                        # text column of integers
    pq.write_table(pa.table({"id": ["n1", "n2"], "text": [5, None], "label": ["x", "x"],
                             "split": ["a", "b"]}), numeric)
    listed = tmp_path / "in" / "listed.parquet"                           # label column of lists
    pq.write_table(pa.table({"id": ["l1", "l2"], "text": ["list ok", "listed"], "label": [None, ["x"]],
                             "split": ["a", "b"]}), listed)

    store = tmp_path / "store"
    r = cli_ingest(store, "every", str(jsonl), str(csv), str(parquet), str(numeric), str(listed),
                   "--id-column", "id", "--label-column", "label", "--split-column", "split",
                   "--labels", "x,y", "--max-bytes", "10")
    result = read_back(store, "every")
    inputs = {jsonl: 15, csv: 11, parquet: 10, numeric: 2, listed: 2}
    check_accounting(result, inputs)
    check_cli_summary(r, result, 40)

    assert result.by_row(jsonl) == {
        1: "ok", 2: "malformed_record", 3: "null_text", 4: "not_string", 5: "empty_text",
        6: "binary_content", 7: "too_large", 8: "missing_id", 9: "invalid_field",
        10: "label_not_allowed", 11: "duplicate_id_conflict", 12: "duplicate_row",
        13: "invalid_utf8", 14: "malformed_record", 15: "ok"}
    assert set(result.by_row(jsonl).values()) == {"ok", *RECORD_REJECT_REASONS}
    assert result.by_row(csv) == {
        1: "ok", 2: "malformed_record", 3: "null_text", 4: "empty_text", 5: "invalid_utf8",
        6: "too_large", 7: "missing_id", 8: "label_not_allowed", 9: "duplicate_id_conflict",
        10: "duplicate_row", 11: "ok"}
    assert result.by_row(parquet) == {
        1: "ok", 2: "null_text", 3: "invalid_utf8", 4: "empty_text", 5: "binary_content",
        6: "too_large", 7: "missing_id", 8: "label_not_allowed", 9: "duplicate_id_conflict",
        10: "duplicate_row"}
    assert result.by_row(numeric) == {1: "not_string", 2: "null_text"}
    assert result.by_row(listed) == {1: "ok", 2: "invalid_field"}
    # Every rejected row with an id names it; the details say what was wrong and where.
    assert [r["doc_id"] for r in result.rejected if r["source"] == str(csv)] == [
        "c2", "c3", "c4", "c5", "c6", None, "c8", "j15", "c1"]
    assert result.detail(csv, 2) == "row has 5 fields, the header has 4"
    assert result.detail(csv, 5).startswith("text: invalid UTF-8 byte 0xe9 at byte 4; the rest of the file reads "
                                            "as UTF-8")        # its other non-ASCII text is UTF-8: not cp1252
    assert result.detail(csv, 9).startswith(f"doc_id 'j15' already taken by {jsonl} row 15")
    assert result.detail(jsonl, 12) == f"same doc_id and text as {jsonl} row 1"
    assert result.detail(parquet, 3) == "text: invalid UTF-8 byte 0xff at byte 5"
    assert result.detail(listed, 2).startswith("label is list ['x']")
    assert {d["doc_id"]: d["text"] for d in result.docs} == {
        "j1": "kept", "j15": "fine", "c1": "hello", "c11": "multi\nline", "p1": "parquet ok", "l1": "list ok"}

    # A re-run over the same files adds no rejected rows and no snapshot.
    again = cli_ingest(store, "every", str(jsonl), str(csv), str(parquet), str(numeric), str(listed),
                       "--id-column", "id", "--label-column", "label", "--split-column", "split",
                       "--labels", "x,y", "--max-bytes", "10")
    assert again.exit_code == 3
    assert read_back(store, "every") == result
    assert len(FeatureStore(str(store)).corpus("every").manifest().snapshots) == 1


# ---------------------------------------------------------------- binary files


def binary_drop(root: Path) -> dict[str, bytes]:
    """Text files with binary ones dropped among them (names sort the archives between texts)."""
    files = {
        "a.txt": b"alpha\r\nbeta\n",
        "logo.png": png_bytes(),
        "photo.zip": zip_bytes({"caption.txt": b"a caption\n", "img.png": png_bytes(1)}),
        "broken.zip": zip_bytes({"x.txt": b"x" * 1000})[:40],             # truncated archive
        "notes.txt.gz": gzip.compress(b"gzipped line\n", mtime=0),
        "report.docx": zip_bytes({"word/document.xml": b"<w:t>hi</w:t>", "word/styles.xml": b"<x/>"}),
        "nul.txt": b"before\x00after\nsecond line\n",                     # NUL in the first 8,000 bytes
        "zip_named.txt": zip_bytes({"inner.txt": b"zipped but named .txt\n" * 20}),
        "late_nul.txt": b"".join(b"line %04d of plain text\n" % i for i in range(400))
                        + b"x\x00y\nafter\n",                               # NUL at byte 9,600
        "z.txt": b"omega\n",
    }
    for name, data in files.items():
        write(root / name, data)
    return files


UNREAD = {"photo.zip": "zip", "broken.zip": "zip", "notes.txt.gz": "gzip", "report.docx": "zip"}


def test_binary_files_among_text_files_read_as_lines(tmp_path):
    files = binary_drop(tmp_path / "drop")
    store = tmp_path / "store"
    r = cli_ingest(store, "drop", str(tmp_path / "drop" / "*"), "--format", "lines")
    result = read_back(store, "drop")
    path = {name: tmp_path / "drop" / name for name in files}
    inputs = {path[name]: 1 if name in UNREAD else lines_in(data) for name, data in files.items()}
    check_accounting(result, inputs)
    check_cli_summary(r, result, sum(inputs.values()))

    assert result.texts(path["a.txt"]) == {1: "alpha", 2: "beta"}
    assert result.texts(path["z.txt"]) == {1: "omega"}
    for name in ["logo.png", "nul.txt", "zip_named.txt"]:            # binary: every line rejected
        assert set(result.by_row(path[name]).values()) == {"binary_content"}, name
    assert "NUL byte" in result.detail(path["logo.png"], 1)
    for name, kind in UNREAD.items():                                 # archives: one row, unread
        assert result.by_row(path[name]) == {1: "binary_content"}, name
        assert result.detail(path[name], 1).startswith(f"{kind} data"), result.detail(path[name], 1)
    late = result.by_row(path["late_nul.txt"])                        # a NUL past 8,000 bytes: its line only
    assert late[401] == "binary_content" and Counter(late.values()) == {"ok": 401, "binary_content": 1}
    assert "first at character 2" in result.detail(path["late_nul.txt"], 401)
    assert not any("caption" in d["text"] or "gzipped" in d["text"] for d in result.docs)


def test_binary_files_among_text_files_one_document_per_file(tmp_path):
    files = binary_drop(tmp_path / "drop")
    store = tmp_path / "store"
    r = cli_ingest(store, "dropf", str(tmp_path / "drop"), "--format", "files")
    result = read_back(store, "dropf")
    path = {name: tmp_path / "drop" / name for name in files}
    check_accounting(result, {p: 1 for p in path.values()})
    check_cli_summary(r, result, len(files))
    outcome = {Path(d["source"]).name: "ok" for d in result.docs}
    outcome.update({Path(x["source"]).name: x["reason"] for x in result.rejected})
    assert outcome == {"a.txt": "ok", "late_nul.txt": "binary_content", "logo.png": "invalid_utf8",
                       "nul.txt": "binary_content", "z.txt": "ok", "zip_named.txt": "invalid_utf8",
                       **{name: "binary_content" for name in UNREAD}}
    # Each text stays with its own file (an archive read as several documents would shift them).
    assert {d["doc_id"]: d["text"] for d in result.docs} == {"a.txt": "alpha\nbeta\n", "z.txt": "omega\n"}
    assert result.detail(path["logo.png"], 1) == "text: invalid UTF-8 byte 0x89 at line 1, byte 1"


def test_binary_files_in_a_labelled_folder(tmp_path):
    root = tmp_path / "news"
    write(root / "sport" / "001.txt", "Goal!")
    write(root / "sport" / "match.docx", zip_bytes({"word/document.xml": b"<w:t>a</w:t>", "b.xml": b"<b/>"}))
    write(root / "sport" / "zz.txt", "Final whistle")
    write(root / "tech" / "001.txt", "New phone")
    write(root / "tech" / "logo.png", png_bytes())
    store = tmp_path / "store"
    r = cli_ingest(store, "news", str(root), "--format", "folder")
    result = read_back(store, "news")
    check_accounting(result, {p: 1 for p in root.glob("*/*")})
    check_cli_summary(r, result, 5)
    assert {d["doc_id"]: (d["text"], d["label"]) for d in result.docs} == {
        "sport/001.txt": ("Goal!", "sport"), "sport/zz.txt": ("Final whistle", "sport"),
        "tech/001.txt": ("New phone", "tech")}
    assert {x["doc_id"]: x["reason"] for x in result.rejected} == {
        "sport/match.docx": "binary_content", "tech/logo.png": "invalid_utf8"}


# ---------------------------------------------------------------- BOMs and CRLF


def test_boms_and_crlf_are_stripped_and_the_rest_goes_through_unchanged(tmp_path):
    d = tmp_path / "in"
    lines = write(d / "bom_crlf.txt", b"\xef\xbb\xbffirst line\r\nsecond\r\n\r\nthird\rfourth\r\n"
                                      b"mid\xef\xbb\xbfdle\r\n  spaced  \r\n")
    doc = write(d / "docs" / "doc.txt", b"\xef\xbb\xbfpara one\r\npara two\r\n")
    csv = write(d / "bom.csv", b"\xef\xbb\xbfid,text,label\r\n1,hello,a\r\n2,\"multi\r\nline\",b\r\n"
                               b"3,\"cafe\xcc\x81\",a\r\n")
    jsonl = write(d / "bom.jsonl", b'\xef\xbb\xbf'
                                   b'{"id": "j1", "text": "caf\\u00e9\\r\\nnext", "label": "a"}\r\n'
                                   b'{"id": "j2", "text": "\\ufeffescaped bom", "label": "b"}\r\n'
                                   b'\r\n')
    store = tmp_path / "store"
    summary = flow_ingest(store, "bom", [
        Source(str(lines)), Source(str(d / "docs"), format="files"),
        Source(str(csv), id_column="id", label_column="label"),
        Source(str(jsonl), id_column="id", label_column="label")])
    result = read_back(store, "bom")
    check_accounting(result, {lines: 7, doc: 1, csv: 3, jsonl: 3})
    assert summary.inputs == 14 and summary.rejected == {"empty_text": 2}
    assert result.texts(lines) == {1: "first line", 2: "second", 4: "third", 5: "fourth",
                                   6: "mid\ufeffdle", 7: "  spaced  "}       # only a leading BOM goes
    assert result.by_row(lines)[3] == "empty_text"
    assert result.texts(doc) == {1: "para one\npara two\n"}
    assert {x["doc_id"]: (x["text"], x["label"]) for x in result.docs if x["source"] == str(csv)} == {
        "1": ("hello", "a"), "2": ("multi\nline", "b"), "3": ("café", "a")}     # BOM'd "id" header found
    assert {x["doc_id"]: x["text"] for x in result.docs if x["source"] == str(jsonl)} == {
        "j1": "café\nnext", "j2": "escaped bom"}
    assert result.by_row(jsonl)[3] == "empty_text"


# ---------------------------------------------------------------- encodings


def test_mixed_encodings_in_text_files(tmp_path):
    d = tmp_path / "enc"
    files = {
        "utf8.txt": "naïve café\nplain\n".encode("utf-8"),
        "utf8_nfd.txt": "cafe\u0301\n".encode("utf-8"),
        "latin1.txt": "café\nplain ascii\n".encode("latin-1"),
        "cp1252.txt": "\u201csmart\u201d quotes\n\u20ac5\n".encode("cp1252"),
        "mojibake.txt": "Ã©tÃ©\n".encode("latin-1"),                   # bytes c3 a9 ...: valid UTF-8
        "utf16le_bom.txt": "hello\nworld\n".encode("utf-16"),             # ff fe, little-endian
        "utf16be_bom.txt": b"\xfe\xff" + "hello\n".encode("utf-16-be"),
        "utf16_no_bom.txt": "hi\nthere\n".encode("utf-16-le"),
        "utf32.txt": "hey\n".encode("utf-32"),
    }
    for name, data in files.items():
        write(d / name, data)
    path = {name: d / name for name in files}
    store = tmp_path / "store"
    r = cli_ingest(store, "enc", str(d / "*.txt"))
    result = read_back(store, "enc")
    inputs = {path[name]: lines_in(data) for name, data in files.items()}
    check_accounting(result, inputs)
    check_cli_summary(r, result, sum(inputs.values()))
    assert result.texts(path["utf8.txt"]) == {1: "naïve café", 2: "plain"}
    assert result.texts(path["utf8_nfd.txt"]) == {1: "café"}                 # NFC
    assert result.by_row(path["latin1.txt"]) == {1: "invalid_utf8", 2: "ok"}
    assert result.detail(path["latin1.txt"], 1).startswith("text: invalid UTF-8 byte 0xe9 at byte 4; the file decodes as cp1252")
    assert result.by_row(path["cp1252.txt"]) == {1: "invalid_utf8", 2: "invalid_utf8"}
    assert result.detail(path["cp1252.txt"], 1).startswith("text: invalid UTF-8 byte 0x93 at byte 1; the file decodes as cp1252:")
    assert result.texts(path["mojibake.txt"]) == {1: "été"}                  # read as UTF-8, not guessed
    for name, named in [("utf16le_bom.txt", "UTF-16-LE"), ("utf16be_bom.txt", "UTF-16-BE"),
                        ("utf16_no_bom.txt", "UTF-16"), ("utf32.txt", "UTF-32-LE")]:
        assert set(result.by_row(path[name]).values()) == {"binary_content"}, name
        assert named in result.detail(path[name], 1), result.detail(path[name], 1)


def test_mixed_encodings_in_csv_jsonl_and_parquet(tmp_path):
    d = tmp_path / "enc"
    csv = write(d / "mixed.csv", "text,label\nnaïve,a\n".encode() + b"caf\xe9,a\n"
                + "\u201cq\u201d,b\n".encode("cp1252") + b"plain,b\n")
    csv16 = write(d / "utf16.csv", "text,label\nhi,a\nthere,b\n".encode("utf-16"))
    jsonl = write(d / "mixed.jsonl", b'{"text": "ok \xc3\xa9", "label": "a"}\n'
                                     b'{"text": "caf\xe9", "label": "a"}\n'
                                     b'{"text": "fine", "label": "caf\xe9"}\n')
    jsonl16 = write(d / "utf16.jsonl",
                    '{"text": "a", "label": "a"}\n{"text": "b", "label": "b"}\n'.encode("utf-16"))
    parquet = d / "mixed.parquet"
    labels = pa.array([b"a", b"caf\xe9"]).view(pa.string())
    pq.write_table(pa.table({"text": ["one", "two"], "label": labels}), parquet)
    store = tmp_path / "store"
    sources = [Source(str(p), label_column="label") for p in (csv, csv16, jsonl, jsonl16, parquet)]
    flow_ingest(store, "enc", sources)
    result = read_back(store, "enc")
    check_accounting(result, {csv: 4, csv16: lines_in(csv16.read_bytes()), jsonl: 3,
                              jsonl16: lines_in(jsonl16.read_bytes()), parquet: 2})
    assert result.by_row(csv) == {1: "ok", 2: "invalid_utf8", 3: "invalid_utf8", 4: "ok"}
    assert result.texts(csv) == {1: "naïve", 4: "plain"}
    assert set(result.by_row(csv16).values()) == set(result.by_row(jsonl16).values()) == {"binary_content"}
    assert "UTF-16-LE" in result.detail(csv16, 1)
    assert result.by_row(jsonl) == {1: "ok", 2: "invalid_utf8", 3: "invalid_utf8"}
    assert result.detail(jsonl, 3).startswith("line: invalid UTF-8 byte 0xe9 at byte 31; the file decodes as cp1252")
    assert result.by_row(parquet) == {1: "ok", 2: "invalid_utf8"}
    assert result.detail(parquet, 2) == "label: invalid UTF-8 byte 0xe9 at byte 4"  # names the column


# ---------------------------------------------------------------- 100k lines, 1% bad


BIG_ROWS, BIG_BAD = 100_000, 1_000


def big_record(i: int) -> dict:
    return {"id": f"d{i}", "text": f"document {i}: café", "label": ("pos", "neg", None)[i % 3]}


BIG_BAD_FIELDS = {                    # reason -> what a bad line changes in its good record
    "null_text": {"text": None}, "not_string": {"text": 12}, "empty_text": {"text": " \t "},
    "binary_content": {"text": "nul\u0000byte"}, "too_large": {"text": "x" * 300},
    "missing_id": {"id": None}, "invalid_field": {"label": ["pos"]}, "label_not_allowed": {"label": "maybe"},
    "duplicate_id_conflict": {"id": "d1"},                               # line 1's id, other text
    "duplicate_row": big_record(1),                                      # line 1 again
}


def big_line(i: int, kind: str | None) -> bytes:
    """Line i of the big JSONL file: a good document, or a bad one of `kind` (a reject reason)."""
    if kind == "malformed_record":
        return b'{"id": "d%d", "text": "cut' % i
    if kind == "invalid_utf8":
        return b'{"id": "d%d", "text": "caf\xe9"}' % i
    record = big_record(i) if kind is None else {**big_record(i), **BIG_BAD_FIELDS[kind]}
    return json.dumps(record, ensure_ascii=False).encode()


def test_100k_lines_with_one_percent_bad_rows(tmp_path):
    rng = random.Random(20240607)
    kinds = sorted(RECORD_REJECT_REASONS)
    planted = {row: rng.choice(kinds) for row in rng.sample(range(2, BIG_ROWS + 1), BIG_BAD)}
    assert set(planted.values()) == set(RECORD_REJECT_REASONS)
    data = b"\r\n".join(big_line(i, planted.get(i)) for i in range(1, BIG_ROWS + 1)) + b"\r\n"
    path = write(tmp_path / "big.jsonl", data)
    store = tmp_path / "store"
    r = cli_ingest(store, "big", str(path), "--id-column", "id", "--label-column", "label",
                   "--labels", "pos,neg", "--max-bytes", "200")
    result = read_back(store, "big")
    check_accounting(result, {path: BIG_ROWS})
    check_cli_summary(r, result, BIG_ROWS)
    assert {x["row"]: x["reason"] for x in result.rejected} == planted
    assert len(result.docs) == BIG_ROWS - BIG_BAD
    expected = {f"d{i}": big_record(i) for i in range(1, BIG_ROWS + 1) if i not in planted}
    assert {d["doc_id"]: {"id": d["doc_id"], "text": d["text"], "label": d["label"]}
            for d in result.docs} == expected


# ---------------------------------------------------------------- mixed-type labels


def test_mixed_type_labels_become_strings_one_way(tmp_path):
    """A JSONL/Parquet string stays as it is ("1.0" stays "1.0", "True" stays "True"); an integer, or a
    float with an integral value, is written as an integer (1, 1.0, -0.0 -> "1", "1", "0");
    another float as Python writes it (1.5, inf); booleans "true"/"false"; null, NaN and the
    empty string (an empty CSV cell is CSV's null) -> null, i.e. unlabelled; lists and
    objects -> rejected (invalid_field). Ids follow the same rule (7, "7" and 7.0 are one id).
    CSV has only strings: a cell that is a JSON number or boolean is typed first, so CSV
    "1.0" and "True" give "1" and "true" as JSONL and Parquet 1.0 and true do."""
    d = tmp_path / "lab"
    jsonl_labels = [1, "1", 1.0, "1.0", 1.5, True, "true", False, None, "", float("nan"), "NA",
                    [1], {"a": 1}, 10**20, -0.0, "  x  ", float("inf")]
    jsonl_expected = ["1", "1", "1", "1.0", "1.5", "true", "true", "false", None, None, None, "NA",
                      "invalid_field", "invalid_field", "100000000000000000000", "0", "  x  ", "inf"]
    jsonl = write(d / "labels.jsonl", "".join(json.dumps({"id": f"j{i}", "text": f"jsonl {i}", "label": v})
                                              + "\n" for i, v in enumerate(jsonl_labels, 1))
                  + '{"id": 7, "text": "seven"}\n{"id": "7", "text": "seven"}\n{"id": 7.0, "text": "other"}\n'
                    '{"id": true, "text": "bool id"}\n')
    csv_cells = ["1", "1.0", "1.5", "true", "True", "", "NA", "null", " x "]
    csv_expected = ["1", "1", "1.5", "true", "true", None, "NA", "null", " x "]   # cells typed as JSON
    csv = write(d / "labels.csv",
                "id,text,label\n" + "".join(f"c{i},csv {i},{v}\n" for i, v in enumerate(csv_cells, 1)))
    columns = {
        "int": pa.array([1, None, -3], pa.int64()),
        "float": pa.array([1.0, 1.5, float("nan"), None], pa.float64()),
        "bool": pa.array([True, False, None]),
        "str": pa.array(["1", "1.0", "", None]),
        "dict": pa.array(["x", "y", "x"]).dictionary_encode(),
        "large": pa.array(["big", None], pa.large_string()),
        "list": pa.array([[1], None], pa.list_(pa.int64())),
    }
    parquet_expected = {"int": ["1", None, "-3"], "float": ["1", "1.5", None, None],
                        "bool": ["true", "false", None], "str": ["1", "1.0", None, None],
                        "dict": ["x", "y", "x"], "large": ["big", None], "list": ["invalid_field", None]}
    for kind, labels in columns.items():
        pq.write_table(pa.table({"text": [f"{kind} {i}" for i in range(len(labels))], "label": labels}),
                       d / f"lab_{kind}.parquet")
    store = tmp_path / "store"
    sources = [Source(str(jsonl), id_column="id", label_column="label"),
               Source(str(csv), id_column="id", label_column="label"),
               Source(str(d / "lab_*.parquet"), label_column="label")]
    flow_ingest(store, "labels", sources)
    result = read_back(store, "labels")
    inputs = {jsonl: len(jsonl_labels) + 4, csv: len(csv_cells),
              **{d / f"lab_{k}.parquet": len(v) for k, v in columns.items()}}
    check_accounting(result, inputs)

    def labels_of(path: Path) -> list[str | None]:
        docs = {x["row"]: x["label"] for x in result.docs if x["source"] == str(path)}
        return [docs.get(row, result.by_row(path)[row]) for row in range(1, inputs[path] + 1)]

    assert labels_of(jsonl)[:len(jsonl_labels)] == jsonl_expected
    assert labels_of(csv) == csv_expected
    for kind, expected in parquet_expected.items():
        assert labels_of(d / f"lab_{kind}.parquet") == expected, kind
    ids = {x["row"]: (x["reason"], x["doc_id"]) for x in result.rejected if x["source"] == str(jsonl)}
    n = len(jsonl_labels)
    assert ids[n + 2] == ("duplicate_row", "7") and ids[n + 3] == ("duplicate_id_conflict", "7")
    assert {x["doc_id"] for x in result.docs} >= {"7", "true"}
    assert all(isinstance(x["label"], (str, type(None))) for x in result.docs)

    # A declared label set is compared with the normalized strings: JSONL 1.0 is "1" and
    # passes, and so does CSV "1.0"; unlabelled rows (null, NaN, "") always pass.
    flow_ingest(store, "declared", sources[:2], IngestConfig(labels=("1", "true")))
    declared = read_back(store, "declared")
    check_accounting(declared, {jsonl: inputs[jsonl], csv: inputs[csv]})
    assert {x["label"] for x in declared.docs} == {"1", "true", None}
    assert declared.by_row(csv) == {1: "ok", 2: "ok", 3: "label_not_allowed", 4: "ok",
                                    5: "ok", 6: "ok", 7: "label_not_allowed",
                                    8: "label_not_allowed", 9: "label_not_allowed"}


# ---------------------------------------------------------------- files that cannot be parsed


def test_files_without_countable_rows_fail_clearly_and_commit_nothing(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": ["fine"]}), good)
    corrupt = write(tmp_path / "corrupt.parquet", b"PAR1 this is not parquet at all")
    truncated = write(tmp_path / "truncated.parquet", good.read_bytes()[:-12])
    quote = write(tmp_path / "quote.csv", b"text,label\n" + b"ok,1\n" * 50 + b'"never closed,2\nmore,3\n')
    first = write(tmp_path / "first.csv", b'text,label\n"never closed,2\nmore,3\n')   # found when planning
    store = tmp_path / "store"
    for corpus, paths, named in [("pq", [good, corrupt], corrupt), ("pqt", [truncated], truncated),
                                 ("quote", [quote], quote), ("first", [first], first)]:
        r = cli_ingest(store, corpus, *map(str, paths))
        assert r.exit_code == 2, r.output
        assert str(named) in r.output.replace("\n", ""), r.output
        assert corpus not in FeatureStore(str(store)).corpora()


# ---------------------------------------------------------------- rejects belong to their snapshot


def test_a_file_read_by_two_sources_keeps_every_reject(tmp_path):
    path = write(tmp_path / "twice.txt", b"good\n\nbad \xff\n")
    store = tmp_path / "store"
    summary = ingest_corpus(str(store), "twice", [Source(str(path)), Source(str(path))], IngestConfig())
    assert (summary.inputs, summary.documents, summary.rejected_total) == (6, 1, 5)
    result = read_back(store, "twice")
    assert len(result.docs) + len(result.rejected) == summary.inputs
    # The same content again keeps the snapshot, and its rejects are not stored twice.
    again = ingest_corpus(str(store), "twice", [Source(str(path)), Source(str(path))], IngestConfig())
    assert again.snapshot == summary.snapshot
    assert sql(FeatureStore(str(store)), "SELECT count(*) AS n FROM rejected")["n"].to_pylist() == [5]


def test_rejected_rows_are_those_of_the_current_snapshot(tmp_path):
    path = write(tmp_path / "notes.txt", b"good\n\nbad \xff\n")
    store = tmp_path / "store"
    ingest_corpus(str(store), "notes", [Source(str(path))], IngestConfig())
    write(path, b"good\nfixed\n")
    summary = ingest_corpus(str(store), "notes", [Source(str(path))], IngestConfig())
    assert summary.rejected == {}
    check_accounting(read_back(store, "notes"), {path: 2})
    # The first snapshot's rejects are still there, under its id.
    earlier = sql(FeatureStore(str(store)), "SELECT snapshot, row, reason FROM rejected ORDER BY row").to_pylist()
    assert earlier == [{"snapshot": "000001", "row": 2, "reason": "empty_text"},
                       {"snapshot": "000001", "row": 3, "reason": "invalid_utf8"}]


# ---------------------------------------------------------------- links and late keys (issue 18)


def test_link_cycles_and_broken_links_through_the_cli(tmp_path):
    """A glob over two folder cycles finishes with each file once; a dangling and a
    self-pointing link are rejected rows (broken_link); each loop a link_loop row; exit 3."""
    root = tmp_path / "L"
    write(root / "sport" / "001.txt", "A football match report.\n")
    write(root / "tech" / "001.txt", "A new phone.\n")
    os.symlink("..", root / "sport" / "again")
    os.symlink("../sport", root / "tech" / "sideways")
    os.symlink(tmp_path / "gone.txt", root / "tech" / "gone.txt")
    os.symlink("self.txt", root / "tech" / "self.txt")
    store = tmp_path / "store"
    r = cli_ingest(store, "g", str(root / "**" / "*.txt"))
    assert r.exit_code == 3 and "Traceback" not in r.output, r.output
    result = read_back(store, "g")
    assert sorted(d["text"] for d in result.docs) == ["A football match report.", "A new phone."]
    assert sorted((os.path.basename(x["source"]), x["reason"]) for x in result.rejected) == [
        ("again", "link_loop"), ("gone.txt", "broken_link"), ("self.txt", "broken_link"),
        ("sideways", "link_loop")]
    r = cli_ingest(store, "f", str(root), "--format", "folder")        # a folder source: the same
    assert r.exit_code == 3 and "broken_link" in r.output, r.output
    assert len(read_back(store, "f").docs) == 2


def test_jsonl_keys_first_seen_late_through_the_cli(tmp_path):
    """1,000 blank lines then a record, and 1,000 unlabelled records before the first label:
    rows are judged one by one (empty_text), never the whole file (issue 18 item 6)."""
    late = write(tmp_path / "late.jsonl", "\n" * 1000 + json.dumps({"text": "late", "label": "pos"}) + "\n")
    unlabelled = write(tmp_path / "unlabelled.jsonl", "".join(json.dumps({"text": f"unlabelled {i}"}) + "\n"
                                                              for i in range(1000)) + json.dumps({"text": "x", "label": "pos"}))
    store = tmp_path / "store"
    r = cli_ingest(store, "j", str(late), str(unlabelled), "--label-column", "label")
    result = read_back(store, "j")
    check_accounting(result, {late: 1001, unlabelled: 1001})
    check_cli_summary(r, result, 2002)
    assert result.by_row(late)[1001] == "ok" and set(result.by_row(unlabelled).values()) == {"ok"}
