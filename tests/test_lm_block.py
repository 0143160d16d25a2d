"""The LM-block option (Pang et al. 2024): a frozen GPT block inside the vision encoder."""

import dataclasses

import pytest
import torch

import lmblock
from frozen import FrozenConfig
from vision import LMBlockLayer, VisualFeatures
from lmblock import KindClassifier
from gpt import GPT, GPTConfig

CFG = FrozenConfig(encoder="tiny", image_size=32)


def tiny_lm():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32, smear_keys=True))


def test_the_block_reads_visual_tokens_as_a_set_no_causal_mask_no_positions():
    layer = LMBlockLayer(tiny_lm(), "last", width=16).eval()
    tokens = torch.randn(2, 9, 16)
    perm = torch.randperm(9)
    # permutation equivariance holds only without a causal mask and without positions
    assert torch.allclose(layer(tokens)[:, perm], layer(tokens[:, perm]), atol=1e-5)
    # and a later token changes earlier outputs (no causal mask)
    changed = tokens.clone()
    changed[:, -1] += 1
    assert not torch.allclose(layer(tokens)[:, 0], layer(changed)[:, 0])


def test_frozen_block_is_a_bit_identical_copy_after_training(tmp_path):
    lm = tiny_lm()
    model = KindClassifier(dataclasses.replace(CFG, lm_block="last"), 5, lm)
    before = {k: v.clone() for k, v in model.features.lm_block.block.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    assert not model.features.lm_block.block.training
    for _ in range(3):
        loss, _ = model(torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in model.features.lm_block.block.state_dict().items():
        assert torch.equal(v, before[k]) and torch.equal(v, lm.blocks[-1].state_dict()[k]), k
    assert all(p.grad is None for p in model.features.lm_block.block.parameters())
    assert model.features.lm_block.inp.weight.grad is not None


@pytest.mark.parametrize("mode", ["finetune", "random", "mlp"])
def test_control_modes_train_their_block(mode):
    lm = tiny_lm()
    layer = LMBlockLayer(lm, "0", width=16, mode=mode)
    assert all(p.requires_grad for p in layer.block.parameters())
    n_block = sum(p.numel() for p in lm.blocks[0].parameters())
    n = sum(p.numel() for p in layer.block.parameters())
    assert abs(n - n_block) / n_block < 0.05  # the MLP control has the block's size
    if mode == "random":
        assert not torch.equal(layer.block.attn.qkv.weight, lm.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("mode", ["finetune", "random", "mlp"])
def test_control_modes_train_their_block_inside_frozen_too(mode):
    """In stage prefix the LM is frozen before the encoder copies its block: the controls must
    still train theirs, while the LM itself stays frozen."""
    from frozen import Frozen

    model = Frozen(tiny_lm(), FrozenConfig(image_size=32, lm_block="last", lm_block_mode=mode))
    assert all(p.requires_grad for p in model.vision.features.lm_block.block.parameters())
    assert not any(p.requires_grad for p in model.lm.parameters())


def test_option_off_costs_nothing():
    torch.manual_seed(0)
    features = VisualFeatures(CFG)
    assert features.lm_block is None
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(features(images), features.encoder(images))


def test_a_block_the_lm_does_not_have_is_refused():
    with pytest.raises(ValueError, match="blocks 0..1"):
        LMBlockLayer(tiny_lm(), "7", width=16)


def test_stage_classify_runs_scores_and_tabulates_seeds(lm_dir, tmp_path):
    run = ["train", "--lm-ckpt", str(lm_dir / "lm.pt"), "--out-dir", str(tmp_path), "--lm-block", "last",
           "--max-steps", "2", "--batch-size", "4", "--eval-images", "8", "--num-workers", "0"]
    lmblock.main(run + ["--eval-interval", "2", "--log-interval", "1", "--ckpt-interval", "2"])
    ckpt = torch.load(tmp_path / "classify.pt", weights_only=True)
    assert ckpt["kind"] == "classify" and ckpt["n"] == 8 and 0 <= ckpt["correct"] <= 8
    lmblock.main(run + ["--resume"])  # a finished run, resumed: keeps its score
    again = torch.load(tmp_path / "classify.pt", weights_only=True)
    assert (again["correct"], again["n"]) == (ckpt["correct"], ckpt["n"])

    result = lmblock.main(["table", f"frozen-block={tmp_path / 'classify.pt'}"])
    row = result["rows"]["frozen-block"]
    assert row["runs"] == [ckpt["correct"] / 8] and row["ci"] is None  # one seed: no interval
    # runs under one name are seeds of one variant: their mean, and an interval across them
    pooled = lmblock.main(["table", f"b={tmp_path / 'classify.pt'}", f"b={tmp_path / 'classify.pt'}"])
    assert pooled["rows"]["b"]["runs"] == [ckpt["correct"] / 8] * 2
    assert pooled["rows"]["b"]["acc"] == pytest.approx(ckpt["correct"] / 8)
    assert pooled["rows"]["b"]["ci"] == pytest.approx([ckpt["correct"] / 8] * 2)  # no spread between them


def test_classify_refuses_torchrun(monkeypatch):
    """Under torchrun every process would train and save its own model: refused, not wrapped."""
    from common import Runtime

    monkeypatch.setattr(lmblock, "setup_runtime", lambda *a: Runtime(torch.device("cpu"), torch.float32, 0, 2))
    with pytest.raises(SystemExit, match="one process"):
        lmblock.main(["train", "--lm-block", "none", "--max-steps", "1", "--num-workers", "0"])
