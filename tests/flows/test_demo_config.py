"""The embedded demo's BERT settings: int8 per channel on a CPU, said in its output; configs keep theirs."""

import importlib.util

import pytest
import torch

from embcache.flows.run_config import DEMO_BERT, demo_note, load_config


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None or torch.cuda.is_available(),
                    reason="the demo picks int8-channel on a CPU with onnxruntime")
def test_the_demo_encodes_int8_per_channel_and_says_so(tmp_path):
    demo = load_config(None)
    assert DEMO_BERT == {"quantize": "int8-channel"} and demo.encode.quantize == "int8-channel"
    assert "int8 per channel" in demo_note(demo) and 'quantize = "none"' in demo_note(demo)
    assert load_config({}).encode.quantize == "none"                # a config of one's own: the defaults
    path = tmp_path / "mine.toml"
    path.write_text("[bert]\nmax_length = 128\n")
    assert load_config(path).encode.quantize == "none"
    assert "fp32" in demo_note(load_config({}))
