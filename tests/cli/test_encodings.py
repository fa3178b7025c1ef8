"""Issue 31 item 1: a real cp1252/latin-1 mix is read with `--encoding auto`, and the strict
UTF-8 default says what the file seems to be in (charset-normalizer) and how to pass it.

The file is what a tweets export made on Windows looks like: mostly ASCII, cp1252's curly
quotes, euro sign and ellipsis, latin-1 accents (the same bytes in both), and one stray 0x81
(undefined in cp1252, a C1 control in latin-1: why neither decodes it strictly).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc

from embcache.flows.run_config import load_config
from embcache.pipeline.decoding import chosen_encodings, describe, detect_encoding, summarize
from embcache.pipeline.ingest import ingest
from embcache.pipeline.configs import Source
from embcache.storage import FeatureStore

EMBCACHE = str(Path(sys.executable).with_name("embcache"))      # the console script
TWEETS = [
    ("I \u201clove\u201d this caf\u00e9 \u2014 it\u2019s great", "pos"),
    ("flight delayed again\u2026 3 hours at the gate", "neg"),
    ("only 5\u20ac for the whole menu, na\u00efve me expected more", "pos"),
    ("Gr\u00fc\u00dfe aus M\u00fcnchen!", "pos"),
    ("worst service ever, never again", "neg"),
    ("D\u00e9j\u00e0 vu: cr\u00e8me br\u00fbl\u00e9e for dessert", "pos"),
    ("the app crashed twice today", "neg"),
    ("Se\u00f1or Jos\u00e9 says \u00a1hola! to everyone", "pos"),
] * 4


def tweets_csv(path: Path) -> Path:
    """A cp1252 CSV; the row with id 9 carries a stray 0x81 byte."""
    rows = [b"id,text,label"]
    for i, (text, label) in enumerate(TWEETS):
        cell = text.encode("cp1252").replace(b"\"", b"\"\"")
        rows.append(f"{i},".encode() + b"\"" + (b"\x81" if i == 9 else b"") + cell + b"\"," + label.encode())
    path.write_bytes(b"\r\n".join(rows) + b"\r\n")
    return path


def test_encoding_auto_reads_a_cp1252_latin1_mix_and_says_what_it_chose(tmp_path):
    csv = tweets_csv(tmp_path / "tweets.csv")
    store = tmp_path / "s"
    r = subprocess.run([EMBCACHE, "--store", str(store), "ingest", "tweets", str(csv), "--id-column", "id",
                        "--label-column", "label", "--encoding", "auto"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 3, r.stderr                                        # the 0x81 row only
    assert "encoding auto: cp1252 for 1 file (tweets.csv): detected by charset-normalizer" in r.stdout, r.stdout
    assert f"{len(TWEETS) - 1:,} documents" in r.stdout and "rejected        1  invalid_utf8" in r.stdout
    fs = FeatureStore(store)
    docs = fs.corpus("tweets").read(columns=["doc_id", "text_sha"])
    texts = fs.open("documents").lookup(docs["text_sha"], ["text"])["text"].to_pylist()     # in docs' order
    by_id = dict(zip(docs["doc_id"].to_pylist(), texts))
    assert by_id["0"] == TWEETS[0][0] and by_id["2"] == TWEETS[2][0] and by_id["3"] == TWEETS[3][0]
    rejected = fs.open("rejected").read()
    assert rejected["doc_id"].to_pylist() == ["9"]
    assert rejected["detail"][0].as_py() == "text: invalid cp1252 (chosen by --encoding auto) byte 0x81 at byte 1"
    assert pc.sum(pc.equal(rejected["reason"], "invalid_utf8")).as_py() == 1


def test_the_utf8_default_rejects_with_a_hint_from_the_detector(tmp_path):
    csv = tweets_csv(tmp_path / "tweets.csv")
    batch = ingest(Source(str(csv), id_column="id", label_column="label"))
    assert batch.documents["doc_id"].to_pylist() == [str(i) for i, (t, _) in enumerate(TWEETS) if t.isascii()]
    detail = batch.rejected["detail"][0].as_py()
    assert detail.startswith("text: invalid UTF-8 byte 0x93 at byte 3; the file decodes as cp1252 except 1 byte "
                             "value(s) undefined in it (0x81: their records stay rejected)"), detail
    assert "--encoding cp1252" in detail and "--encoding auto detects each file's" in detail


def test_detection_per_file_in_python_and_in_a_run_config(tmp_path):
    csv = tweets_csv(tmp_path / "tweets.csv")
    (tmp_path / "ok.csv").write_text("id,text,label\n100,plain caf\u00e9,pos\n", encoding="utf-8")
    (tmp_path / "wide.csv").write_bytes("id,text,label\n200,hello w\u00f6rld,pos\n".encode("utf-16"))
    with chosen_encodings() as chosen:
        batch = ingest(Source(str(tmp_path / "*.csv"), encoding="auto", id_column="id", label_column="label"))
    assert {k: v["files"] for k, v in summarize(chosen).items()} == {"cp1252": 1, "utf-8": 1, "utf-16": 1}
    assert "utf-16 for 1 file (wide.csv): UTF-16-LE BOM" in describe(summarize(chosen))
    texts = dict(zip(batch.documents["doc_id"].to_pylist(), batch.documents["text"].to_pylist()))
    assert texts["100"] == "plain caf\u00e9" and texts["200"] == "hello w\u00f6rld" and texts["1"] == TWEETS[1][0]
    assert str(detect_encoding(str(csv))) == "cp1252 (detected by charset-normalizer)"
    cfg = load_config({"corpora": [{"name": "t", "sources": [{"path": str(csv), "encoding": "auto"}]}]})
    assert cfg.corpora[0].sources[0].encoding == "auto"
