"""A tiny real BERT (2 layers, hidden 32) and WordPiece tokenizer, saved like a hub model."""

import string

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """the a an is are was on in of to and cat cats dog sat sits sitting mat rug quarterly
earnings beat analyst expectations market bank shares film music game team win won play
new year said would people government minister election tax growth rate company""".split()
PIECES = ["ing", "ed", "er", "est", "ly", "s", "tion"]


def tiny_vocab() -> list[str]:
    """Specials, characters, ##characters, a few suffixes and whole words: ~160 tokens."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = SPECIALS + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits] \
        + [f"##{p}" for p in PIECES] + WORDS
    return list(dict.fromkeys(tokens))  # unique, first spelling wins: ids are line numbers


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """Path of a saved tiny BertModel (safetensors) + fast tokenizer; random, seeded weights."""
    path = tmp_path_factory.mktemp("tiny_bert")
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(vocab_file), model_max_length=64)
    tokenizer.save_pretrained(path)
    config = BertConfig(vocab_size=len(tiny_vocab()), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
                        pad_token_id=0, initializer_range=0.2)  # wide init: vectors differ clearly
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(path)
    return str(path)
