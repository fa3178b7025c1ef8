import os

import pytest

# Models and data come from local paths here; never wait on a hub that cannot be reached.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def prefect_engine():
    """One real Prefect engine (temporary server + database) for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """Path of a saved tiny BertModel (safetensors) + fast tokenizer; random, seeded weights."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    from tests.pipeline.conftest import tiny_vocab
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
