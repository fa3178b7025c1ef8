"""Ingest's configs: where documents come from (Source) and how they are checked (IngestConfig).

Part of pipeline/configs.py, which re-exports them; light (no pandas, no torch).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import ClassVar, Literal

from . import decoding  # noqa: F401  (registers the codecs "auto" and "auto:<codec>")
from .errors import PipelineError

Normalization = Literal["NFC", "NFKC", "none"]                                  # unicode form of every text
Format = Literal["auto", "lines", "files", "csv", "jsonl", "parquet", "folder"]  # how a source is read


# -- IngestConfig (pipeline/ingest.py) -------------------------------------------------

@dataclass(frozen=True)
class IngestConfig:
    """How documents are checked and normalized (part of the documents table's fingerprint)."""

    max_bytes: int = 1_000_000      # reject text above this many UTF-8 bytes (after normalization);
                                    # long-but-valid text is truncated later, at tokenization
    labels: tuple[str, ...] | None = None   # declared label set; a label outside it is rejected
    normalization: Normalization = "NFC"    # unicode form applied to every text before hashing
    rescan: bool = False            # read every file, even those unchanged since the last ingest
                                    # (stages/source_state.py); changes no row

    speed_only: ClassVar[tuple[str, ...]] = ("rescan",)   # fields left out of fingerprints (configs.output_fields)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {self.max_bytes}")
        if self.normalization not in ("NFC", "NFKC", "none"):
            raise ValueError(f"normalization must be NFC, NFKC or none, got {self.normalization!r}")
        if self.labels is not None and not isinstance(self.labels, tuple):
            raise ValueError("labels must be a tuple (the config is hashed and frozen)")


# -- Source (pipeline/sources.py) ------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Where documents come from; a corpus may have several."""

    path: str                      # a file, a directory, or a glob ("data/*.csv", "data/**/*.txt")
    format: Format = "auto"
    # lines: one document per line of each text file; files: one document per text file;
    # folder: <root>/<label>/**/<file>, label = the directory name (files directly under
    # <root> are not documents: READMEs, licences); csv (.tsv is tab-separated), jsonl,
    # parquet: one document per record; auto: a directory with subdirectories is a folder,
    # otherwise each file by its extension (.txt is lines; one-file-per-document needs "files").
    text_column: str = "text"      # column / JSON field holding the text (text formats: "text")
    label_column: str | None = None   # column holding the label (folder: the directory, "label")
    id_column: str | None = None   # column holding a document id; None: ids from path and row
    split_column: str | None = None   # column holding the split name (train/test/...), if any
    # put before every doc_id of this source (its positional ids then stay relative to the
    # source itself, whatever the other sources are); see `pipeline/ingest.py` for the id rule
    id_prefix: str = ""
    # text encoding of the source's lines, files, folder, csv and jsonl files (Parquet strings
    # are UTF-8 by definition): None reads UTF-8 (a UTF-8 BOM is dropped; a UTF-16/32 BOM is
    # reported); "auto" detects each file's (pipeline/decoding.py; ingest says what it chose);
    # else any Python codec name, as pandas takes it ("cp1252", "latin-1", "utf-16")
    encoding: str | None = None

    def __post_init__(self) -> None:
        if self.encoding is not None:
            _check_text_codec(self.encoding, f"Source {self.path}")


def _check_text_codec(name: str, where: str) -> None:
    try:
        ok = codecs.lookup(name)._is_text_encoding      # "base64", "zlib": bytes-to-bytes codecs
    except (LookupError, TypeError):
        ok = False
    if not ok:
        raise PipelineError(where, f"encoding {name!r} is not a text encoding Python knows "
                                   "(e.g. 'utf-8', 'cp1252', 'latin-1', 'utf-16'), nor 'auto'")
