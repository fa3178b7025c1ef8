import copy
import json
import shutil

import numpy as np
import pytest
import torch

from embcache.pipeline.encode import EncodeConfig, encode
from embcache.pipeline.checkpoints import load_optimizer_bytes, optimizer_bytes
from embcache.pipeline.errors import ModelLoadError, PipelineError
from embcache.pipeline.finetune import (FinetuneConfig, _lr_at, finetune, predict_from_features, predict_logits,
                               train_frozen_head, unfreeze)
from embcache.pipeline.model import load_classifier, load_model, load_tokenizer

from .test_model import malicious_pickle

CLASS_WORDS = (["cat", "dog", "mat", "rug", "sat"], ["market", "bank", "shares", "tax", "growth"])
FILLER = ["the", "a", "on", "in", "of", "and"]


@pytest.fixture(scope="module")
def template(tiny_bert):
    """The tiny BERT with a fresh 2-class head (seeded); tests train deep copies of it."""
    torch.manual_seed(1)
    return load_classifier(tiny_bert, num_labels=2, id2label={0: "pets", 1: "money"})


@pytest.fixture(scope="module")
def toy(tiny_bert):
    """64 documents of 2-7 words; the class words in a document decide its label."""
    tokenizer, rng = load_tokenizer(tiny_bert), np.random.default_rng(3)
    texts, labels = [], []
    for i in range(64):
        label = i % 2
        words = list(rng.choice(CLASS_WORDS[label], size=rng.integers(1, 4)))
        words += list(rng.choice(FILLER, size=rng.integers(1, 4)))
        texts.append(" ".join(rng.permutation(words)))
        labels.append(label)
    ids = [np.asarray(r, dtype=np.int64) for r in tokenizer(texts)["input_ids"]]
    return ids, np.asarray(labels)


def params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_config_validation():
    for bad in ({"freeze_epochs": -1}, {"unfreeze_layers": -1}, {"lr": 0}, {"batch_size": 0},
                {"schedule": "cosine"}, {"warmup_fraction": 1.0}, {"threads": 0}, {"seed": 1.5}):
        with pytest.raises(PipelineError, match=f"FinetuneConfig.{next(iter(bad))}"):
            FinetuneConfig(**bad)


def test_load_classifier_refuses_pickle_only_dir(tiny_bert, tmp_path):
    model_dir, marker = tmp_path / "model", tmp_path / "pwned"
    shutil.copytree(tiny_bert, model_dir)
    (model_dir / "model.safetensors").unlink()
    (model_dir / "pytorch_model.bin").write_bytes(malicious_pickle(marker))
    with pytest.raises(ModelLoadError, match="pickle"):
        load_classifier(model_dir, num_labels=2)
    assert not marker.exists()


def test_load_classifier_keeps_encoder_and_reports_only_surprises(tiny_bert, template, caplog, tmp_path):
    encoder = load_model(tiny_bert).state_dict()
    assert all(torch.equal(v, template.bert.state_dict()[k]) for k, v in encoder.items())
    assert template.config.id2label == {0: "pets", 1: "money"} and not template.training
    load_classifier(tiny_bert, num_labels=3)
    assert "LOAD REPORT" not in caplog.text                   # a new head is expected: quiet
    no_pooler = tmp_path / "no_pooler"
    type(template.bert)(template.config, add_pooling_layer=False).save_pretrained(no_pooler)
    with pytest.raises(ModelLoadError, match="pooler"):       # cached pooler vectors need it
        load_classifier(no_pooler, num_labels=2)
    assert "LOAD REPORT" in caplog.text and "bert.pooler.dense.weight" in caplog.text


def test_unfreeze_top_layer(template):
    model = copy.deepcopy(template)
    names = unfreeze(model, 1)
    top = ("bert.encoder.layer.1.", "bert.pooler.", "classifier.")
    assert names and all(n.startswith(top) for n in names)
    assert any(n.startswith("bert.pooler.") for n in names) and "classifier.weight" in names
    assert len(unfreeze(model, None)) == len(list(model.parameters()))
    with pytest.raises(PipelineError, match="the encoder has 2"):
        unfreeze(model, 3)


def test_head_phase_learns_separable_features_without_encoder(template):
    model = copy.deepcopy(template)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(320, 32)).astype(np.float32)                        # (N, H)
    y = (x @ rng.normal(size=32) > 0).astype(np.int64)
    calls = []
    hook = model.bert.register_forward_pre_hook(lambda *_: calls.append(1))
    before, rng_state = params(model), torch.get_rng_state()
    config = FinetuneConfig(freeze_epochs=15, head_lr=0.05, head_batch_size=32, threads=1)
    report = train_frozen_head(model, x[:256], y[:256], config, val=(x[256:], y[256:]))
    hook.remove()
    assert calls == []                                                        # no encoder forward
    assert report.epoch_loss[-1] < 0.5 * report.epoch_loss[0]
    assert report.val_accuracy[-1] >= 0.9 and report.steps == 15 * 8
    assert report.trainable == ["classifier.weight", "classifier.bias"]
    after = params(model)
    assert all(torch.equal(before[n], after[n]) for n in before if not n.startswith("classifier."))
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert torch.equal(rng_state, torch.get_rng_state())                      # caller's generator kept


def test_cached_pooler_vectors_give_the_full_models_logits(template, toy):
    ids = toy[0]
    cached = encode(ids, template.bert, EncodeConfig(pooling="pooler", batch_tokens=64))  # the store's
    from_features = predict_from_features(template, cached)                   # (N, 2)
    with torch.no_grad():
        alone = np.concatenate([template(input_ids=torch.from_numpy(r)[None]).logits.numpy() for r in ids])
    np.testing.assert_allclose(from_features, alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(predict_logits(template, ids, batch_tokens=64), alone, atol=1e-5, rtol=0)


def test_top_layer_phase_leaves_lower_layers_bit_identical(template, toy):
    model = copy.deepcopy(template)
    before = params(model)
    config = FinetuneConfig(unfreeze_epochs=1, unfreeze_layers=1, lr=1e-3, batch_size=16, threads=1)
    report = finetune(model, *toy, config)
    after = params(model)
    frozen = [n for n in before if n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    trained = [n for n in before if n not in frozen]
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert all(not torch.equal(before[n], after[n]) for n in trained)         # layer 1, pooler, head
    assert sorted(report.trainable) == sorted(trained) and report.steps == 4


def test_resumed_run_equals_uninterrupted_run(template, toy):
    config = FinetuneConfig(unfreeze_epochs=2, lr=1e-3, batch_size=8, checkpoint_every=3, threads=1)
    whole = copy.deepcopy(template)
    full_report = finetune(whole, *toy, config)                               # 16 steps, never stopped

    class Stop(Exception):
        pass

    saved = {}

    def stop_at_step_9(info, files):
        saved.update(files)
        if info.global_step == 9:                                             # epoch 1, batch 1
            raise Stop

    with pytest.raises(Stop):
        finetune(copy.deepcopy(template), *toy, config, on_checkpoint=stop_at_step_9)
    meta = json.loads(saved["checkpoint.json"])
    assert (meta["epoch"], meta["step"], meta["global_step"]) == (1, 1, 9)
    resumed = copy.deepcopy(template)
    with torch.no_grad():                                   # the checkpoint's weights must win
        for p in resumed.parameters():
            p.add_(torch.randn_like(p))
    torch.manual_seed(123)                                  # the caller's RNG must not matter
    forwards = []
    resumed.bert.register_forward_pre_hook(lambda *_: forwards.append(1))
    report = finetune(resumed, *toy, FinetuneConfig(**{**vars(config), "checkpoint_every": 0}),
                      resume=saved)
    assert len(forwards) == 16 - 9                                            # only the steps left
    want, got = params(whole), params(resumed)
    assert max(float((want[n] - got[n]).abs().max()) for n in want) <= 1e-6
    np.testing.assert_allclose(report.epoch_loss, full_report.epoch_loss, rtol=1e-6)
    assert report.steps == full_report.steps == 16


def test_optimizer_state_loads_back_exactly():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    opt = torch.optim.AdamW([{"params": [net[0].weight], "weight_decay": 0.01},
                             {"params": [net[0].bias, *net[1].parameters()], "weight_decay": 0.0}], lr=1e-2)
    x = torch.randn(8, 4)
    for _ in range(3):
        opt.zero_grad()
        net(x).square().sum().backward()
        opt.step()
    twin = copy.deepcopy(net)
    fresh = torch.optim.AdamW([{"params": [twin[0].weight]},
                               {"params": [twin[0].bias, *twin[1].parameters()]}])
    load_optimizer_bytes(fresh, optimizer_bytes(opt))
    want, got = opt.state_dict(), fresh.state_dict()
    assert want["param_groups"] == got["param_groups"]
    for i, state in want["state"].items():
        assert state.keys() == got["state"][i].keys()
        assert all(torch.equal(v, got["state"][i][k]) for k, v in state.items())
    for model, optimizer in ((net, opt), (twin, fresh)):                     # the next step agrees too
        optimizer.zero_grad()
        model(x).square().sum().backward()
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), twin.parameters()))


def test_checkpoint_from_another_version_or_run_refused(template, toy):
    config = FinetuneConfig(unfreeze_epochs=1, batch_size=32, threads=1)
    files = {}
    finetune(copy.deepcopy(template), *toy, config, on_checkpoint=lambda info, f: files.update(f))
    meta = json.loads(files["checkpoint.json"])
    wrong = {**files, "checkpoint.json": json.dumps({**meta, "format_version": 2}).encode()}
    with pytest.raises(PipelineError, match="version 2; this code reads"):
        finetune(copy.deepcopy(template), *toy, config, resume=wrong)
    with pytest.raises(PipelineError, match="seed"):
        finetune(copy.deepcopy(template), *toy, FinetuneConfig(unfreeze_epochs=1, seed=1), resume=files)
    with pytest.raises(PipelineError, match="data_sha256"):
        finetune(copy.deepcopy(template), toy[0], 1 - toy[1], config, resume=files)
    with pytest.raises(PipelineError, match="optimizer.safetensors"):
        finetune(copy.deepcopy(template), *toy, config, resume={"checkpoint.json": files["checkpoint.json"]})


def test_linear_schedule_warms_up_then_decays():
    config = FinetuneConfig(lr=1.0, warmup_fraction=0.2)
    lrs = [_lr_at(config, s, 10) for s in range(10)]
    assert lrs[:3] == [0.5, 1.0, 1.0] and lrs[-1] == 0.125 and all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    assert _lr_at(FinetuneConfig(lr=0.5, schedule="constant"), 7, 10) == 0.5


def test_both_phases_learn_the_toy_task(template, toy):
    ids, labels = toy
    model = copy.deepcopy(template)
    cached = encode(ids, model.bert, EncodeConfig(pooling="pooler"))         # what the store holds
    config = FinetuneConfig(freeze_epochs=10, unfreeze_epochs=6, head_lr=1e-2, lr=1e-3, batch_size=16,
                            head_batch_size=16, threads=1)
    head = train_frozen_head(model, cached, labels, config)
    full = finetune(model, ids, labels, config, val=(ids, labels))
    assert head.epoch_loss[-1] < head.epoch_loss[0]
    assert full.epoch_loss[-1] < full.epoch_loss[0] and full.epoch_loss[-1] < head.epoch_loss[-1]
    assert full.val_accuracy[-1] >= 0.8                                     # chance is 0.5
