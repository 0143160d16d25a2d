"""frozen.py and train.py --stage prefix: the LM really frozen, the captioning loss on caption
tokens only, interleaved sequences, few-shot generation, the ablation flags."""

import pytest
import torch
import torch.nn.functional as F

import checkpoint
import train
from frozen import IMAGE_SLOT, Frozen, FrozenConfig, caption_rows, caption_targets
from gpt import GPT, GPTConfig

from conftest import shape_image, timed_as, write_pairs


def tiny_frozen(dropout=0.0, train_lm=False, n_prefix=2):
    torch.manual_seed(0)
    lm = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=dropout))
    return Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=n_prefix, image_size=32), train_lm=train_lm)


def prefix_args(lm_dir, out, steps, *extra):
    return ["--stage", "prefix", "--lm-ckpt", str(lm_dir / "lm.pt"), "--out-dir", str(out),
            "--max-steps", str(steps), "--batch-size", "4", "--image-size", "32", "--num-workers", "0",
            "--warmup-steps", "1", "--log-interval", "1", "--eval-interval", "2", "--eval-batches", "1",
            "--ckpt-interval", "2", *extra]


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    write_pairs(folder, 24)
    return folder


def test_the_lm_is_frozen_at_construction_and_stays_in_eval_mode():
    model = tiny_frozen(dropout=0.5)
    assert not any(p.requires_grad for p in model.lm.parameters())
    assert all(p.requires_grad for p in model.vision.parameters())
    model.train()
    assert model.vision.training and not model.lm.training  # dropout off in the frozen LM
    ids = torch.randint(0, 50, (1, 8))
    assert torch.equal(model.lm(ids)[0], model.lm(ids)[0])


def test_prefix_noise_is_drawn_in_training_only_at_the_asked_share_of_the_token_rms():
    torch.manual_seed(0)
    lm = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32))
    model = Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=2, image_size=32, prefix_noise=0.5))
    seen = []
    model.lm.forward = lambda embeds, targets: seen.append(embeds[:, :2].detach()) or (None, embeds.sum())
    images, (inputs, targets) = torch.randn(64, 3, 32, 32), caption_targets([[5]] * 64, 2, eot_id=1, pad_id=0)
    model.eval()
    model(images, inputs, targets)
    model(images, inputs, targets)
    assert torch.equal(seen[0], seen[1])  # no noise at inference
    model.train()
    model(images, inputs, targets)
    noise = seen[2] - model.vision.eval()(images)
    rms = noise.pow(2).mean().sqrt() / lm.embedding_rms()
    assert rms.item() == pytest.approx(0.5, rel=0.05)
    with pytest.raises(ValueError, match="--prefix-noise"):
        FrozenConfig(prefix_noise=-1)


def test_caption_targets_put_minus_100_on_prefix_and_padding():
    inputs, targets = caption_targets([[5, 6, 7], [8]], n_prefix=2, eot_id=1, pad_id=0)
    assert inputs.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert targets.tolist() == [[-100, 5, 6, 7, 1], [-100, 8, 1, -100, -100]]


def test_loss_is_a_hand_computed_cross_entropy_over_caption_tokens():
    model = tiny_frozen().eval()
    images = torch.randn(2, 3, 32, 32)
    inputs, targets = caption_targets([[5, 6, 7], [8]], n_prefix=2, eot_id=1, pad_id=0)
    loss = model(images, inputs, targets)
    # by hand: the logits of [prefix, caption] at the positions that predict caption tokens
    terms = []
    for b, caption in enumerate([[5, 6, 7], [8]]):
        embeds = torch.cat([model.vision(images[b:b + 1])[0], model.lm.embed(torch.tensor(caption))])
        logits, _ = model.lm(embeds=embeds[None])
        wanted = caption + [1]  # the caption and end-of-text, predicted from the last prefix position on
        terms.append(F.cross_entropy(logits[0, 1:1 + len(wanted)], torch.tensor(wanted), reduction="sum"))
    assert loss.item() == pytest.approx((sum(terms) / 6).item(), rel=1e-5)


def test_pad_id_and_padding_change_nothing():
    model = tiny_frozen().eval()
    images = torch.randn(2, 3, 32, 32)
    a = model(images, *caption_targets([[5, 6, 7], [8]], 2, eot_id=1, pad_id=0))
    b = model(images, *caption_targets([[5, 6, 7], [8]], 2, eot_id=1, pad_id=49))
    assert a.item() == pytest.approx(b.item(), abs=1e-6)
    # the short caption's padding adds nothing: the batch loss is the token-weighted mean of the
    # two captions' losses computed alone (4 and 2 target tokens)
    first = model(images[:1], *caption_targets([[5, 6, 7]], 2, eot_id=1, pad_id=0))
    second = model(images[1:], *caption_targets([[8]], 2, eot_id=1, pad_id=0))
    assert a.item() == pytest.approx((4 * first.item() + 2 * second.item()) / 6, rel=1e-5)


def test_interleaved_sequence_places_each_prefix_where_its_image_stands():
    model = tiny_frozen(n_prefix=2).eval()
    img1, img2 = torch.randn(3, 32, 32), torch.randn(3, 32, 32)
    seq = model.embed_sequences([[img1, [3, 4, 5], img2, [6]]])[0]
    assert seq.shape == (2 + 3 + 2 + 1, 32)
    assert torch.allclose(seq[0:2], model.vision(img1[None])[0], atol=1e-6)
    assert torch.equal(seq[2:5], model.lm.embed(torch.tensor([3, 4, 5])))
    assert torch.allclose(seq[5:7], model.vision(img2[None])[0], atol=1e-6)
    assert torch.equal(seq[7:], model.lm.embed(torch.tensor([6])))


def test_cached_and_uncached_few_shot_generation_agree():
    model = tiny_frozen().eval()
    prompts = [[torch.randn(3, 32, 32), [3, 4], torch.randn(3, 32, 32), [5]],
               [[7], torch.randn(3, 32, 32), [8, 9, 10]]]
    cached = model.generate(prompts, max_new_tokens=10)
    assert cached == model.generate(prompts, max_new_tokens=10, use_cache=False)
    assert cached == [model.generate([p], max_new_tokens=10)[0] for p in prompts]


def test_stage_prefix_leaves_every_lm_tensor_bit_identical(lm_dir, pairs_dir, tmp_path):
    before = torch.load(lm_dir / "lm.pt", weights_only=True)["model"]
    model, _ = train.train_prefix(*build(prefix_args(lm_dir, tmp_path, 3, "--data", str(pairs_dir))))
    for name, tensor in model.lm.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert all(p.grad is None for p in model.lm.parameters())
    ckpt = torch.load(tmp_path / "prefix.pt", weights_only=True)
    assert not any(k.startswith("lm.") for k in ckpt["model"])  # only the trained parameters
    fresh = Frozen(GPT(model.lm.config), model.config)
    changed = [k for k, v in fresh.vision.state_dict().items()
               if not torch.equal(v, model.vision.state_dict()[k])]
    assert "proj.weight" in changed and any(k.startswith("features.encoder.") for k in changed)


def test_finetune_lm_ablation_trains_the_lm_at_its_own_lr(lm_dir, pairs_dir, tmp_path):
    before = torch.load(lm_dir / "lm.pt", weights_only=True)["model"]
    model, _ = train.train_prefix(*build(prefix_args(lm_dir, tmp_path, 2, "--data", str(pairs_dir), "--finetune-lm")))
    assert not torch.equal(model.lm.state_dict()["wte.weight"], before["wte.weight"])
    ckpt = torch.load(tmp_path / "prefix.pt", weights_only=True)
    assert any(k.startswith("lm.") for k in ckpt["model"])
    reloaded, _, _ = checkpoint.load_frozen(tmp_path / "prefix.pt")
    assert torch.equal(reloaded.lm.wte.weight, model.lm.wte.weight)


def test_lm_from_scratch_is_a_random_lm_trained_at_stage_lm_rate(lm_dir, pairs_dir, tmp_path):
    """The paper's 'LM from scratch': a freshly initialised GPT, not the pretrained one, trained at a
    rate for training from scratch (stage lm's) rather than the fine-tuning one."""
    model, _ = train.train_prefix(*build(prefix_args(lm_dir, tmp_path, 1, "--data", str(pairs_dir),
                                                     "--lm-init", "scratch")))
    pretrained = torch.load(lm_dir / "lm.pt", weights_only=True)
    torch.manual_seed(0)  # train_prefix seeds with --seed 0, then builds the random LM
    checkpoint.load_lm(lm_dir / "lm.pt")
    init = GPT(model.lm.config).state_dict()
    trained = model.lm.state_dict()
    w, w0, wp = trained["blocks.0.mlp.fc.weight"], init["blocks.0.mlp.fc.weight"], pretrained["model"]["blocks.0.mlp.fc.weight"]
    assert not torch.equal(w, w0)  # it trained
    # one Adam step moves each weight by about the lr (the first step is lr * g / |g|): stage lm's
    # rate, 300x the fine-tuning rate of 1e-5; the weights are the random init's, not the pretrained
    lr = pretrained["train_config"]["lr"]
    step = (w - w0).abs()
    assert 0.5 * lr < step[step > 0].median() < 1.5 * lr
    assert (w - w0).abs().mean() < 0.25 * (w - wp).abs().mean()


def blind_run_weights(lm_dir, pairs, out):
    train.main(prefix_args(lm_dir, out, 2, "--data", str(pairs), "--blind"))
    return torch.load(out / "prefix.pt", weights_only=True)["model"]


def test_the_blind_ablation_never_sees_its_images(lm_dir, pairs_dir, tmp_path):
    """Trained on black images: the same captions with other pictures train the same weights."""
    other = tmp_path / "other_pictures"
    other.mkdir()
    for caption in sorted(pairs_dir.glob("*.txt")):
        (other / caption.name).write_text(caption.read_text())
        shape_image("blue", "circle", size=(33, 47)).save(other / f"{caption.stem}.png")
    a = blind_run_weights(lm_dir, pairs_dir, tmp_path / "a")
    b = blind_run_weights(lm_dir, other, tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    train.main(prefix_args(lm_dir, tmp_path / "seeing", 2, "--data", str(other)))
    seeing = torch.load(tmp_path / "seeing" / "prefix.pt", weights_only=True)["model"]
    assert not torch.equal(seeing["vision.proj.weight"], b["vision.proj.weight"])


def test_a_changed_lm_checkpoint_is_refused(lm_dir, pairs_dir, tmp_path):
    import shutil

    lm_copy = tmp_path / "lm"
    shutil.copytree(lm_dir, lm_copy)
    train.main(prefix_args(lm_copy, tmp_path, 2, "--data", str(pairs_dir)))
    state = torch.load(lm_copy / "lm.pt", weights_only=True)
    state["step"] += 1
    torch.save(state, lm_copy / "lm.pt")
    with pytest.raises(ValueError, match="has changed since"):
        checkpoint.load_frozen(tmp_path / "prefix.pt")
    with pytest.raises(ValueError, match="expected a stage-prefix checkpoint"):
        checkpoint.load_frozen(lm_copy / "lm.pt")


def test_a_run_records_its_measured_precision_and_a_resume_keeps_it(lm_dir, pairs_dir, tmp_path, bf16_cpu,
                                                                   monkeypatch):
    timed_as(monkeypatch, 1.5)
    train.main(prefix_args(lm_dir, tmp_path, 2, "--data", str(pairs_dir)))
    assert torch.load(tmp_path / "prefix.pt", weights_only=True)["precision"] == "bfloat16"
    calls = timed_as(monkeypatch, 0.5)  # it would choose float32 now, but the run is half done
    train.main(prefix_args(lm_dir, tmp_path, 4, "--data", str(pairs_dir), "--resume"))
    assert torch.load(tmp_path / "prefix.pt", weights_only=True)["precision"] == "bfloat16" and calls == []


def test_missing_lm_checkpoint_is_one_line_naming_it(tmp_path, pairs_dir):
    with pytest.raises(SystemExit) as e:
        train.main(prefix_args(tmp_path / "none", tmp_path, 2, "--data", str(pairs_dir)))
    assert "lm.pt: checkpoint not found" in str(e.value)


@pytest.mark.parametrize("flag, value", [("--prefix-scale", "big"), ("--encoder-shortcut", "maxpool"),
                                         ("--lm-block-mode", "half"), ("--encoder", "resnet9"), ("--lm-block", "first")])
def test_a_bad_flag_value_is_one_line_naming_the_flag_and_its_choices(tmp_path, pairs_dir, flag, value):
    with pytest.raises(SystemExit) as e:
        train.main(prefix_args(tmp_path / "none", tmp_path, 2, "--data", str(pairs_dir), flag, value))
    message = str(e.value)
    assert message.startswith(f"error: {flag} must be") and repr(value) in message and "\n" not in message


def build(argv):
    args = train.parse_args(argv)
    preset = train.PRESETS["prefix"][args.preset]
    return (train.build_config(train.PrefixConfig, args, preset["train"]),
            train.build_config(FrozenConfig, args, preset["model"]))


@pytest.mark.parametrize("change, field", [(("--n-prefix", "2"), "n_prefix"), (("--lm-block", "last"), "lm_block"),
                                           (("--finetune-lm",), "finetune_lm"), (("--blind",), "blind"),
                                           (("--image-size", "48"), "image_size")])
def test_resume_of_another_prefix_run_is_refused(lm_dir, pairs_dir, tmp_path, change, field):
    train.main(prefix_args(lm_dir, tmp_path, 2, "--data", str(pairs_dir), "--n-prefix", "4"))
    with pytest.raises(SystemExit) as e:
        train.main(prefix_args(lm_dir, tmp_path, 4, "--data", str(pairs_dir), "--n-prefix", "4", *change, "--resume"))
    assert "prefix.pt: --resume asks for another run" in str(e.value) and field in str(e.value)


def test_prefix_scale_token_puts_every_prefix_vector_at_the_token_embeddings_rms():
    lm = tiny_frozen().lm
    scaled = Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=2, image_size=32, prefix_scale="token"))
    with torch.no_grad():
        scaled.vision.proj.weight.mul_(100)  # a map that has grown: the norm still holds
        prefix = scaled.vision(torch.randn(3, 3, 32, 32))
    rms = lm.wte.weight.pow(2).mean().sqrt()
    assert prefix.shape == (3, 2, 32)
    assert torch.allclose(prefix.pow(2).mean(-1).sqrt(), rms.expand(3, 2), rtol=1e-4)
    free = tiny_frozen()  # the paper's linear map by default: no norm
    assert free.config.prefix_scale == "free" and free.vision.token_rms is None
    with pytest.raises(ValueError, match="prefix-scale"):
        Frozen(lm, FrozenConfig(encoder="tiny", image_size=32, prefix_scale="big"))
    with pytest.raises(ValueError, match="encoder-shortcut"):
        Frozen(lm, FrozenConfig(encoder="tiny", image_size=32, encoder_shortcut="maxpool"))


def test_prefix_scale_centred_subtracts_each_slots_mean_over_images():
    lm = tiny_frozen().lm
    centred = Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=2, image_size=32, prefix_scale="centred"))
    images = torch.randn(6, 3, 32, 32)
    centred.train()
    with torch.no_grad():
        centred.vision.proj.weight.mul_(100)  # a trained map's size (at init rms_norm's eps would show)
        raw = centred.vision.proj(centred.vision.features(images)).view(6, 2, 32)
        prefix = centred.vision(images)
    # in training: the batch's mean out, then token scale (the centred vectors' directions kept)
    expected = raw - raw.mean(0)
    rms = lm.wte.weight.pow(2).mean().sqrt()
    assert torch.allclose(prefix, rms * expected / expected.pow(2).mean(-1, keepdim=True).sqrt(), atol=1e-5)
    assert torch.allclose(centred.vision.slot_mean, 0.1 * raw.mean(0), atol=1e-6)  # a running mean, from zero
    # at inference: the running mean, the same for one image as for a batch
    centred.eval()
    with torch.no_grad():
        one, batch = centred.vision(images[:1]), centred.vision(images)
    assert torch.allclose(one, batch[:1], atol=1e-5)
    assert "vision.slot_mean" in centred.trainable_state_dict()  # saved with the encoder


def test_centred_slots_centre_only_the_named_slots():
    lm = tiny_frozen().lm
    model = Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=3, image_size=32, prefix_scale="token", centred_slots="2"))
    images = torch.randn(6, 3, 32, 32)
    model.train()
    with torch.no_grad():
        model.vision.proj.weight.mul_(100)
        raw = model.vision.proj(model.vision.features(images)).view(6, 3, 32)
        prefix = model.vision(images)
    expected = torch.cat([raw[:, :2], raw[:, 2:] - raw[:, 2:].mean(0)], dim=1)
    rms = lm.wte.weight.pow(2).mean().sqrt()
    assert torch.allclose(prefix, rms * expected / expected.pow(2).mean(-1, keepdim=True).sqrt(), atol=1e-5)
    model.eval()
    with torch.no_grad():
        one, batch = model.vision(images[:1]), model.vision(images)
    assert torch.allclose(one, batch[:1], atol=1e-5)
    with pytest.raises(ValueError, match="--centred-slots"):
        FrozenConfig(n_prefix=2, prefix_scale="token", centred_slots="2")
    with pytest.raises(ValueError, match="--prefix-scale token"):
        FrozenConfig(n_prefix=2, centred_slots="1")


def test_prefix_scale_vocab_makes_each_prefix_vector_an_average_of_readable_token_embeddings():
    lm = tiny_frozen().lm
    words = Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=2, image_size=32, prefix_scale="vocab"))
    words.vision.exclude_words([0, 1])
    table = lm.wte.weight.detach()
    queries = torch.randn(3, 2, 32)
    prefix = words.vision.mixture_of_words(queries).detach()
    # the mixture's weights, recomputed: a softmax over the readable words, none on 0 and 1
    logits = 10 * F.normalize(queries, dim=-1) @ F.normalize(table, dim=-1).t()
    w = logits.masked_fill(torch.arange(50) < 2, float("-inf")).softmax(-1)
    assert torch.allclose(prefix, w @ table, atol=1e-6)
    assert (w[..., :2] == 0).all() and torch.allclose(w.sum(-1), torch.ones(3, 2))
    # at the sharpest scale a query along one word picks that word: the prefix is then that token
    with torch.no_grad():
        words.vision.sharpness.fill_(100.0)  # clamped to a logit scale of 100
    sharp = words.vision.mixture_of_words(table[7].expand(1, 1, 32)).detach()
    assert torch.allclose(sharp[0, 0], table[7], atol=1e-4)
    # even when an excluded word matches best, none of its embedding is used
    assert not torch.allclose(words.vision.mixture_of_words(table[1].expand(1, 1, 32))[0, 0], table[1], atol=1e-3)
    # the table stays the frozen LM's: not the encoder's parameter, not saved with it, no gradient
    assert all(p is not lm.wte.weight for p in words.vision.parameters())
    assert "vision.readable" in words.trainable_state_dict()
    assert not any(k.startswith("vision.") and "wte" in k for k in words.trainable_state_dict())
    words(torch.randn(2, 3, 32, 32), torch.randint(2, 50, (2, 5)), torch.randint(2, 50, (2, 7))).backward()
    assert lm.wte.weight.grad is None and words.vision.proj.weight.grad.abs().sum() > 0


def test_prefix_scale_words_makes_each_prefix_vector_its_nearest_readable_word_with_a_straight_through_gradient():
    lm = tiny_frozen().lm
    words = Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=2, image_size=32, prefix_scale="words"))
    words.vision.exclude_words([0, 1])
    table = lm.wte.weight.detach()
    queries = torch.randn(3, 2, 32, requires_grad=True)
    prefix = words.vision.nearest_words(queries)
    # the forward value is a row of the table: the nearest readable word by cosine
    cosine = F.normalize(queries.detach(), dim=-1) @ F.normalize(table, dim=-1).t()
    ids = cosine.masked_fill(torch.arange(50) < 2, float("-inf")).argmax(-1)
    assert torch.equal(prefix.detach(), table[ids]) and (ids >= 2).all()
    # an excluded word is never chosen, even by a query along it
    assert not torch.equal(words.vision.nearest_words(table[1].expand(1, 1, 32))[0, 0], table[1])
    # the gradient reaches the query unchanged (straight through), and never the LM's table
    weights = torch.randn(3, 2, 32)
    (prefix * weights).sum().backward()
    assert torch.equal(queries.grad, weights)
    words(torch.randn(2, 3, 32, 32), torch.randint(2, 50, (2, 5)), torch.randint(2, 50, (2, 7))).backward()
    assert lm.wte.weight.grad is None and words.vision.proj.weight.grad.abs().sum() > 0
    assert "vision.readable" in words.trainable_state_dict() and not hasattr(words.vision, "sharpness")


def test_a_checkpoint_config_with_unknown_fields_is_refused_by_name():
    with pytest.raises(checkpoint.InputError, match="run.pt: .*fields this code does not know \\(colour_depth\\)"):
        checkpoint.config_of(FrozenConfig, {"n_prefix": 2, "colour_depth": 8}, "run.pt")
    assert checkpoint.config_of(FrozenConfig, {"n_prefix": 3}, "run.pt").n_prefix == 3


def test_prefix_words_start_every_image_at_those_words_in_order():
    lm = tiny_frozen().lm
    table = lm.wte.weight
    model = Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=4, image_size=32, prefix_words="a big thing."))
    model.vision.start_at_words([3, 5, 7, 9], table)
    with torch.no_grad():
        model.vision.proj.weight.zero_()  # the map's image-dependent part, before it is trained
        prefix = model.vision(torch.randn(2, 3, 32, 32))
    assert torch.equal(prefix, table[[3, 5, 7, 9]].detach().expand(2, 4, 32))
    # more tokens than slots: n consecutive groups, each slot its group's mean embedding
    model = Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=2, image_size=32, prefix_words="a big thing."))
    model.vision.start_at_words([1, 2, 3, 4, 5], table)
    expected = torch.cat([table[[1, 2, 3]].mean(0), table[[4, 5]].mean(0)])
    assert torch.allclose(model.vision.proj.bias, expected)
    assert not any(p is table for p in model.vision.parameters())  # read from the LM, never shared


def test_prefix_words_reach_the_model_and_too_few_tokens_are_one_line(lm_dir, pairs_dir, tmp_path):
    model, tokenizer, _, _ = train.build_frozen(*build(prefix_args(lm_dir, tmp_path, 1, "--n-prefix", "2",
                                                                    "--prefix-words", "a thing.")), "cpu")
    ids = tokenizer.encode(" a thing.")
    groups = torch.tensor_split(torch.tensor(ids), 2)
    assert torch.allclose(model.vision.proj.bias, torch.cat([model.lm.wte.weight[g].mean(0) for g in groups]))
    with pytest.raises(SystemExit) as e:
        train.main(prefix_args(lm_dir, tmp_path, 2, "--data", str(pairs_dir), "--n-prefix", "8", "--prefix-words", "a"))
    message = str(e.value)
    assert message.startswith("error: --prefix-words 'a' is") and "--n-prefix 8" in message and "\n" not in message


def test_word_slots_are_exactly_their_nearest_word_and_pass_the_gradient_to_the_map():
    lm = tiny_frozen().lm
    model = Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=4, image_size=32, prefix_scale="token", word_slots="2"))
    prefix = model.vision(torch.randn(3, 3, 32, 32))
    words = lm.wte.weight
    nearest = (prefix[:, 2, None, :] - words[None]).abs().sum(-1).min(-1).values
    assert torch.equal(nearest, torch.zeros(3))  # slot 2 is a row of the embedding table
    assert not any(torch.equal(prefix[i, s], w) for i in range(3) for s in (0, 1, 3) for w in words)
    prefix[:, 2].sum().backward()  # straight through: the map learns from the word slot alone
    assert model.vision.proj.weight.grad.abs().sum() > 0 and lm.wte.weight.grad is None
    with pytest.raises(ValueError, match="--word-slots"):
        FrozenConfig(n_prefix=2, word_slots="2")


def test_gumbel_word_slots_draw_a_word_in_training_and_take_the_nearest_at_inference():
    lm = tiny_frozen().lm
    config = FrozenConfig(encoder="tiny", n_prefix=4, image_size=32, prefix_scale="token", word_slots="1,2",
                          word_choice="gumbel")
    model = Frozen(lm, config)
    model.vision.exclude_words([0, 1])  # as build_frozen excludes end-of-text and padding
    images = torch.randn(64, 3, 32, 32)
    words = lm.wte.weight
    model.train()
    torch.manual_seed(0)
    prefix = model.vision(images)
    distance = (prefix[:, 1:3, None, :] - words[None, None]).abs().sum(-1)  # (64, 2, V)
    drawn = distance.argmin(-1)
    assert torch.equal(distance.min(-1).values, torch.zeros(64, 2))  # each slot is a row of the table
    assert not (drawn < 2).any()  # never an excluded word
    model.eval()
    nearest = model.vision(images)[:, 1:3]
    assert torch.equal(nearest, model.vision.nearest_words(nearest))  # inference: the nearest word
    assert not torch.equal(nearest, prefix[:, 1:3].detach())  # training drew others, some of the time
    model.train()
    (model.vision(images)[:, 1:3] * torch.randn(64, 2, 32)).sum().backward()
    # the soft mixture's gradient reaches the map and the sharpness, finite despite the excluded words
    assert model.vision.proj.weight.grad.abs().sum() > 0 and model.vision.sharpness.grad.isfinite()
    with pytest.raises(ValueError, match="--word-choice"):
        FrozenConfig(word_choice="softest")


def test_codebook_word_slots_draw_one_of_the_encoders_own_vectors_and_train_them():
    lm = tiny_frozen().lm
    config = FrozenConfig(encoder="tiny", n_prefix=4, image_size=32, prefix_scale="token", word_slots="2",
                          word_choice="gumbel", codebook=8)
    model = Frozen(lm, config)
    codes = model.vision.codes
    assert codes.shape == (8, 32) and "vision.codes" in model.trainable_state_dict()
    # the codes start as random vectors at the token embeddings' rms
    assert torch.allclose(codes.pow(2).mean(-1).sqrt(), lm.embedding_rms().expand(8), rtol=1e-4)
    images = torch.randn(16, 3, 32, 32)
    model.train()
    prefix = model.vision(images)
    distance = (prefix[:, 2, None, :] - codes[None]).abs().sum(-1)  # (16, 8)
    assert torch.equal(distance.min(-1).values, torch.zeros(16))  # each image's slot is exactly a code
    (prefix * torch.randn_like(prefix)).sum().backward()
    # the drawn codes, the map (through the soft mixture) and the sharpness all learn
    assert codes.grad.abs().sum() > 0 and model.vision.proj.weight.grad.abs().sum() > 0
    assert model.vision.sharpness.grad.isfinite()
    model.eval()
    slot = model.vision(images)[:, 2]
    assert torch.equal(slot, codes[model.vision.cosine_to_words(slot[:, None]).argmax(-1)[:, 0]].detach())
    with pytest.raises(ValueError, match="--codebook is what --word-slots draw from"):
        FrozenConfig(n_prefix=4, codebook=8)
    with pytest.raises(ValueError, match="--word-choice gumbel draws the --word-slots' words"):
        FrozenConfig(n_prefix=4, word_choice="gumbel")
    with pytest.raises(ValueError, match="--codebook"):
        FrozenConfig(n_prefix=4, codebook=8, word_slots="2")  # nearest: the codes would get no gradient


def test_the_visual_word_is_framed_centred_at_token_rms_and_not_trained():
    lm = tiny_frozen().lm
    model = Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=6, image_size=32, prefix_scale="token",
                                    visual_word=True))
    model.vision.frame_visual_word(3, 9, lm.wte.weight)
    assert model.vision.proj.out_features == 3 * 32  # the learned slots: n_prefix - 3
    assert "vision.word_map" in model.trainable_state_dict() and not model.vision.word_map.requires_grad
    images = torch.randn(8, 3, 32, 32)
    model.train()
    prefix = model.vision(images)
    assert prefix.shape == (8, 6, 32)
    assert torch.equal(prefix[:, 3], lm.wte.weight[3].expand(8, -1))  # ' a'
    assert torch.equal(prefix[:, 5], lm.wte.weight[9].expand(8, -1))  # '.'
    words = prefix[:, 4]
    assert torch.allclose(words.pow(2).mean(-1).sqrt(), lm.embedding_rms().expand(8), rtol=1e-4)
    # centred on the batch: the words, mapped back, sum to zero (the map is a fixed linear one)
    features = model.vision.features(images)
    centred = features - features.mean(0)
    assert torch.allclose(words, F.rms_norm(centred @ model.vision.word_map, (32,)) * lm.embedding_rms(), atol=1e-6)
    (words * torch.randn_like(words)).sum().backward()
    # a fixed read-out: the features learn through the learned slots alone
    assert all(p.grad is None or not p.grad.any() for p in model.vision.features.parameters())
    # at inference, the running mean: one image gets the word it would get in a batch like the training ones
    model.eval()
    alone = model.vision(images[:1])[:, 4]
    expected = F.rms_norm((model.vision.features(images[:1]) - model.vision.feature_mean) @ model.vision.word_map,
                          (32,)) * lm.embedding_rms()
    assert torch.allclose(alone, expected, atol=1e-6)
    # with the paper's linear map the learned slots stay unnormalised; only the word is at a token's rms
    free = Frozen(lm, FrozenConfig(encoder="tiny", n_prefix=6, image_size=32, visual_word=True)).eval()
    assert free.vision.token_rms is None
    assert torch.allclose(free.vision(images)[:, 4].pow(2).mean(-1).sqrt(), lm.embedding_rms().expand(8), rtol=1e-4)
    for bad in (dict(n_prefix=3), dict(n_prefix=4, prefix_words="a big thing.")):
        with pytest.raises(ValueError, match="--visual-word"):
            FrozenConfig(visual_word=True, **bad)


def test_fixed_slots_stay_their_words_for_every_image_and_take_no_gradient():
    lm = tiny_frozen().lm
    config = FrozenConfig(encoder="tiny", n_prefix=4, image_size=32, prefix_scale="token", prefix_words="a big thing.",
                          fixed_slots="0,3")
    model = Frozen(lm, config)
    model.vision.start_at_words([3, 5, 7, 9], lm.wte.weight)
    with torch.no_grad():
        model.vision.proj.weight.normal_()  # a map that has moved far from its start
    prefix = model.vision(torch.randn(3, 3, 32, 32))
    assert torch.equal(prefix[:, 0], lm.wte.weight[3].expand(3, -1))
    assert torch.equal(prefix[:, 3], lm.wte.weight[9].expand(3, -1))
    assert not torch.equal(prefix[0, 1], prefix[1, 1])  # the other slots are the image's
    prefix[:, [0, 3]].sum().backward()
    assert model.vision.proj.weight.grad.abs().sum() == 0
    reloaded = Frozen(lm, config)
    reloaded.vision.load_state_dict(model.vision.state_dict())  # the words travel with the checkpoint
    assert torch.equal(reloaded.vision.fixed_words, model.vision.fixed_words)
    with pytest.raises(ValueError, match="--prefix-words"):
        FrozenConfig(n_prefix=4, fixed_slots="0")


def test_naming_captions_on_real_data_is_one_line_not_a_silent_no_op(lm_dir, tmp_path, pairs_dir):
    with pytest.raises(SystemExit) as e:
        train.main(prefix_args(lm_dir, tmp_path, 2, "--data", str(pairs_dir), "--naming-captions", "0.5"))
    assert "--naming-captions rewrites the drawn world's captions" in str(e.value) and "\n" not in str(e.value)


def test_caption_rows_put_each_image_before_its_caption_and_the_loss_on_captions_only():
    inputs, targets = caption_rows([[[5, 6], [7]], [[8, 9, 10]]], n_prefix=2, eot_id=1, pad_id=0)
    assert inputs.tolist() == [[IMAGE_SLOT, IMAGE_SLOT, 5, 6, IMAGE_SLOT, IMAGE_SLOT, 7],
                               [IMAGE_SLOT, IMAGE_SLOT, 8, 9, 10, 0, 0]]
    # a caption's last token predicts the next image: no loss; end-of-text only at the row's end
    assert targets.tolist() == [[-100, 5, 6, -100, -100, 7, 1], [-100, 8, 9, 10, 1, -100, -100]]


def test_a_row_of_one_caption_is_the_one_caption_and_a_row_reads_its_earlier_pairs():
    model = tiny_frozen().eval()
    images = torch.randn(2, 3, 32, 32)
    alone = model(images[:1], *caption_targets([[5, 6, 7]], 2, eot_id=1, pad_id=0))
    row_of_one = model(images[:1], *caption_rows([[[5, 6, 7]]], 2, eot_id=1, pad_id=0))
    assert row_of_one.item() == pytest.approx(alone.item(), abs=1e-6)
    # in a row, the second caption is read after the first image and caption: by hand, on the
    # sequence [prefix 1] 5 6 7 [prefix 2] 8 <eot>
    loss = model(images, *caption_rows([[[5, 6, 7], [8]]], 2, eot_id=1, pad_id=0))
    prefix = model.vision(images)
    words = model.lm.embed(torch.tensor([5, 6, 7, 8]))
    embeds = torch.cat([prefix[0], words[:3], prefix[1], words[3:]])
    logits, _ = model.lm(embeds=embeds[None])
    positions, wanted = [1, 2, 3, 6, 7], [5, 6, 7, 8, 1]
    assert loss.item() == pytest.approx(F.cross_entropy(logits[0, positions], torch.tensor(wanted)).item(), rel=1e-5)
    # and the images take the gradient through the caption loss alone, the LM none
    loss.backward()
    assert model.vision.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.lm.parameters())


def test_captions_in_a_row_train_and_refuse_what_they_cannot_row(lm_dir, tmp_path, pairs_dir):
    train.main(prefix_args(lm_dir, tmp_path / "rows", 2, "--captions-in-row", "2"))
    assert (tmp_path / "rows" / "prefix.pt").is_file()
    for extra, message in ((["--data", str(pairs_dir)], "--captions-in-row rows the drawn world"),
                           (["--blind", "true"], "not with --blind"),
                           (["--captions-in-row", "3"], "--batch-size 4 is not a whole number of rows")):
        args = prefix_args(lm_dir, tmp_path / "bad", 2, *extra)
        if "--captions-in-row" not in extra:
            args += ["--captions-in-row", "2"]
        with pytest.raises(SystemExit) as e:
            train.main(args)
        assert message in str(e.value) and "\n" not in str(e.value)


def test_init_encoder_starts_from_another_runs_encoder_and_refuses_what_it_cannot_use(lm_dir, pairs_dir, tmp_path):
    """--init-encoder: a fresh run (here with a word slot the first run lacked) starts from the
    first run's trained weights; a checkpoint of another LM, or one that trained its LM, is refused."""
    data = ("--data", str(pairs_dir))
    train.main(prefix_args(lm_dir, tmp_path / "a", 2, *data))
    first = torch.load(tmp_path / "a" / "prefix.pt", weights_only=True)
    cfg, frozen_cfg = build(prefix_args(lm_dir, tmp_path / "b", 2, *data, "--word-slots", "1"))
    model, *_ = train.build_frozen(cfg, frozen_cfg, torch.device("cpu"))
    train.start_encoder_from(model, tmp_path / "a" / "prefix.pt", first["lm_hash"])
    for name, tensor in first["model"].items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert model.vision.readable.any()  # the word slot's own buffer keeps its start
    train.main(prefix_args(lm_dir, tmp_path / "b", 2, *data, "--word-slots", "1", "--init-encoder",
                           str(tmp_path / "a" / "prefix.pt")))  # and it trains from there
    with pytest.raises(train.InputError, match="trained against another LM"):
        train.start_encoder_from(model, tmp_path / "a" / "prefix.pt", "another")
    train.main(prefix_args(lm_dir, tmp_path / "ft", 2, *data, "--finetune-lm"))
    with pytest.raises(SystemExit) as e:
        train.main(prefix_args(lm_dir, tmp_path / "c", 2, *data, "--init-encoder", str(tmp_path / "ft" / "prefix.pt")))
    assert "this run trained its LM" in str(e.value)
    with pytest.raises(SystemExit) as e:
        train.main(prefix_args(lm_dir, tmp_path / "c", 2, *data, "--n-prefix", "3",
                               "--init-encoder", str(tmp_path / "a" / "prefix.pt")))
    assert "weights do not fit this run's model" in str(e.value) and "proj.weight" in str(e.value)
    for path, message in ((lm_dir / "lm.pt", "expected a stage-prefix checkpoint"), (tmp_path / "no.pt", "not found")):
        with pytest.raises(SystemExit) as e:
            train.main(prefix_args(lm_dir, tmp_path / "c", 2, *data, "--init-encoder", str(path)))
        assert message in str(e.value) and str(path) in str(e.value)
