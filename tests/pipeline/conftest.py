"""The tiny BERT's vocabulary (the `tiny_bert` fixture itself is in tests/conftest.py, for every package)."""

import string


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
