"""A small real store built through the public API: `embcache.run` on a tiny labelled corpus.

Corpus "bbc" (folder per label, doc ids like business/001.txt), the tiny BERT of
tests/conftest.py saved with its fast tokenizer's tokenizer.json (as hub models ship, so
query texts are encoded through the store's ONNX export without torch), word2vec on
(min_count 1, no subsampling), heads and report off.
"""

import pytest


DOCS = {
    "business": ["quarterly earnings beat analyst expectations",
                 "bank shares rise as the market rate falls",
                 "the company said growth would beat the market",
                 "tax and interest rates rise for the bank",
                 "market shares of the company fall",
                 "the cat sat on the mat"],                       # the same text as sports/006.txt
    "sports": ["the team won the game in the new year",
              "a team would win the game",
              "the game was won by the new team",
              "people play the game and the team sits",
              "the team is to play a new game",
              "the cat sat on the mat"],
    "tech": ["a new game for people and the film music",
             "the film and music company said",
             "new music and film for a new year",
             "people said the film would win",
             "the dog sat on the rug",
             "cats and dogs are sitting on a mat"],
}


def doc_ids() -> list[str]:
    return [f"{label}/{i:03d}.txt" for label, texts in DOCS.items() for i in range(1, len(texts) + 1)]


def text_of(doc_id: str) -> str:
    label, name = doc_id.split("/")
    return DOCS[label][int(name[:3]) - 1]


def config(corpus_dir, tiny_bert) -> dict:
    return {"model": tiny_bert,
            "corpora": [{"name": "bbc", "sources": [{"path": str(corpus_dir), "format": "folder"}]}],
            "bert": {"max_length": 32},
            "word2vec": {"min_count": 1, "subsample": None, "max_window": 2, "negatives": 2,
                         "dim": 16, "epochs": 2, "evaluate": False},
            "head": {"enabled": False}, "static": {"enabled": False}, "report": {"enabled": False}}


@pytest.fixture(scope="session")
def fast_tiny_bert(tmp_path_factory, tiny_bert) -> str:
    """The tiny BERT with a tokenizer.json beside its vocab.txt (transformers' own conversion)."""
    import shutil
    from transformers import AutoTokenizer
    path = tmp_path_factory.mktemp("fast_tiny_bert") / "model"
    shutil.copytree(tiny_bert, path)
    AutoTokenizer.from_pretrained(tiny_bert, local_files_only=True).save_pretrained(path)
    assert (path / "tokenizer.json").is_file()
    return str(path)


@pytest.fixture(scope="session")
def built_store(tmp_path_factory, fast_tiny_bert, prefect_engine):  # noqa: F811
    """(store root, the run record) of one `embcache.run` over the tiny corpus."""
    import embcache
    root = tmp_path_factory.mktemp("api")
    corpus_dir = root / "bbc"
    for doc_id in doc_ids():
        (corpus_dir / doc_id).parent.mkdir(parents=True, exist_ok=True)
        (corpus_dir / doc_id).write_text(text_of(doc_id), encoding="utf-8")
    store = root / "store"
    record = embcache.run(config(corpus_dir, fast_tiny_bert), store=store)
    return str(store), record


@pytest.fixture
def store(built_store):
    import embcache
    return embcache.open(built_store[0])
