import pytest
import torch
import torch.nn.functional as F

from digitformer.models import Seq2Seq, Seq2SeqConfig, ViT, ViTConfig, build_model
from digitformer.models.layers import Attention, KVCache, drop_path, drop_path_rates
from digitformer.models.seq2seq import from_quadrants, quadrant_pool, to_quadrants

TINY_VIT = dict(patch_size=7, dim=32, depth=2, heads=4, ff_dim=64, dropout=0.0)
TINY_S2S = dict(dim=32, enc_depth=2, dec_depth=2, heads=4, ff_dim=64, dropout=0.0)


@pytest.mark.parametrize("norm,stem", [("post", 0), ("pre", 0), ("pre", 4)])
def test_vit_forward_backward_shapes(norm, stem):
    model = ViT(ViTConfig(**TINY_VIT, norm=norm, stem=stem))
    images = torch.rand(5, 1, 28, 28)
    logits = model(images)
    assert logits.shape == (5, 10)
    F.cross_entropy(logits, torch.arange(5)).backward()
    assert all(p.grad is not None for p in model.parameters())
    tokens, attn = model.forward_features(images, need_weights=True)
    assert tokens.shape == (5, 17, 32) and len(attn) == 2 and attn[0].shape == (5, 4, 17, 17)


def test_default_vit_is_the_originals_size():
    model = ViT(ViTConfig())
    assert model.cfg.num_patches == 49
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(0.8e6, rel=0.01)


@pytest.mark.parametrize("attention", ["global", "quadrant"])
@pytest.mark.parametrize("memory", ["quadrants", "patches"])
@pytest.mark.parametrize("stem", [0, 4])
def test_seq2seq_forward_backward_shapes(attention, memory, stem):
    cfg = Seq2SeqConfig(**TINY_S2S, attention=attention, memory=memory, norm="pre", stem=stem)
    model = Seq2Seq(cfg)
    images, targets = torch.rand(3, 1, 56, 56), torch.randint(0, 10, (3, 4))
    logits = model(images, targets)
    assert logits.shape == (3, 4, 10)
    F.cross_entropy(logits.reshape(-1, 10), targets.reshape(-1)).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.encode(images).shape == ((3, 4, 32) if memory == "quadrants" else (3, 64, 32))


@pytest.mark.parametrize(
    "bad",
    [
        dict(dim=30, heads=4),
        dict(patch_size=5),
        dict(norm="mid"),
        dict(activation="tanh"),
        dict(dropout=1.5),
        dict(depth=0),
        dict(stem=-1),
        dict(drop_path=1.0),
    ],
)
def test_invalid_vit_configs_are_refused(bad):
    with pytest.raises(ValueError):
        ViTConfig(**{**TINY_VIT, **bad})


@pytest.mark.parametrize(
    "bad",
    [
        dict(patch_size=8),
        dict(heads=12, dim=256 + 4),
        dict(memory="x"),
        dict(attention="x"),
        dict(dec_depth=0),
        dict(stem=-8),
        dict(drop_path=-0.1),
        dict(window=-1),
        dict(attention="quadrant", window=2),
    ],
)
def test_invalid_seq2seq_configs_are_refused(bad):
    with pytest.raises(ValueError):
        Seq2SeqConfig(**{**TINY_S2S, **bad})


def test_build_model_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown ViTConfig fields: width"):
        build_model("encoder-only", {"width": 3})


def test_fields_that_were_never_options_load_from_older_checkpoints_only_as_they_were():
    old = {**TINY_S2S, "num_classes": 10, "num_digits": 4}  # what older checkpoints stored
    assert Seq2SeqConfig.from_dict(old) == Seq2SeqConfig(**TINY_S2S)
    with pytest.raises(ValueError, match="num_digits can only be 4"):
        Seq2SeqConfig.from_dict({**TINY_S2S, "num_digits": 6})
    with pytest.raises(ValueError, match="num_classes can only be 10"):
        ViTConfig.from_dict({**TINY_VIT, "num_classes": 5})


@pytest.mark.parametrize("model_type", ["encoder-only", "encoder-decoder"])
def test_no_weight_decay_names_the_positions_and_embeddings(model_type):
    model = build_model(model_type, TINY_VIT if model_type == "encoder-only" else TINY_S2S)
    params = dict(model.named_parameters())
    named = model.no_weight_decay()
    assert named <= set(params)  # every name is a real parameter...
    # ...and together with the 1-D ones they are exactly the embeddings, positions and tokens
    exempt = {n for n, p in params.items() if p.ndim < 2 or n in named}
    expected = {
        n
        for n, p in params.items()
        if p.ndim < 2 or any(k in n for k in ("pos", "cls_token", "token_embed"))
    }
    assert exempt == expected and all(params[n].ndim >= 2 for n in named)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_and_explicit_attention_agree(causal):
    torch.manual_seed(0)
    attn = Attention(32, 4).eval()
    x = torch.randn(2, 9, 32)
    fused, none = attn(x, causal=causal)
    explicit, weights = attn(x, causal=causal, need_weights=True)
    assert none is None and weights.shape == (2, 4, 9, 9)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 9))
    if causal:
        assert (weights.triu(1) == 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_attention_under_cpu_bf16_autocast_is_the_fp32_one_to_bf16s_precision(causal):
    """The projections run in bf16, the attention kernel in fp32 (its bf16 backward is slow on
    a CPU): the output and the gradients match fp32's within bf16's rounding."""
    torch.manual_seed(0)
    attn = Attention(32, 4)
    x = torch.randn(2, 9, 32, requires_grad=True)
    exact, _ = attn(x, causal=causal)
    (want,) = torch.autograd.grad(exact.square().sum(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half, _ = attn(x, causal=causal)
    assert half.dtype == torch.bfloat16
    (got,) = torch.autograd.grad(half.float().square().sum(), x)
    torch.testing.assert_close(half.float(), exact, atol=0.03, rtol=0.03)
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.05)
    assert not torch.equal(half.float(), exact)  # bf16 did run


def test_cross_attention_shapes_and_agreement():
    attn = Attention(32, 4).eval()
    x, ctx = torch.randn(2, 3, 32), torch.randn(2, 7, 32)
    fused, _ = attn(x, ctx)
    explicit, weights = attn(x, ctx, need_weights=True)
    assert weights.shape == (2, 4, 3, 7)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_quadrant_pooling_groups_the_right_patches():
    side = 8
    # token value = its quadrant index (reading order) in a row-major 8x8 grid
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    quadrant = (rows // 4) * 2 + (cols // 4)
    tokens = quadrant.reshape(1, 64, 1).float()
    assert quadrant_pool(tokens, side).flatten().tolist() == [0, 1, 2, 3]
    grouped = to_quadrants(tokens, side)
    assert (grouped[0, :, :, 0] == torch.arange(4)[:, None]).all()
    assert torch.equal(from_quadrants(grouped, side), tokens)


@pytest.mark.parametrize("stem", [0, 4])
def test_quadrant_attention_keeps_digits_independent(stem):
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(**TINY_S2S, attention="quadrant", stem=stem)).eval()
    images = torch.rand(1, 1, 56, 56)
    changed = images.clone()
    changed[..., 28:, 28:] = torch.rand(28, 28)  # only the bottom-right digit changes
    a, b = model.encode(images), model.encode(changed)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])


@pytest.mark.parametrize("depth", [1, 2])
def test_windowed_attention_sees_only_nearby_columns(depth):
    """With window w, each encoder block widens what a patch sees by w columns each side: after
    `depth` blocks a patch column depends on the columns within depth * w, and on no other."""
    torch.manual_seed(0)
    window, patch = 1, 7
    cfg = Seq2SeqConfig(
        image_size=28, image_width=140, max_digits=4, ending="end", memory="patches",
        dim=32, heads=2, ff_dim=64, enc_depth=depth, dec_depth=1, window=window,
    )  # fmt: skip
    model = Seq2Seq(cfg).eval()
    images = torch.rand(1, 1, 28, 140)
    changed = images.clone()
    changed[..., 10 * patch : 11 * patch] = torch.rand(28, patch)  # patch column 10 changes
    cols = torch.arange(20).repeat(4)  # each token's patch column, row-major
    a, b = model.encode(images)[0], model.encode(changed)[0]  # (80, D)
    moved = (a - b).abs().amax(-1) > 1e-5
    assert torch.equal(moved, (cols - 10).abs() <= depth * window)


@pytest.mark.parametrize("norm,stem", [("post", 0), ("pre", 0), ("pre", 4)])
def test_encoder_started_from_a_vit_reads_each_digit_as_the_vit_does(norm, stem):
    """With a stem too: it convolves each quadrant on its own, zero-padded like a lone digit."""
    torch.manual_seed(0)
    vit = ViT(ViTConfig(**TINY_VIT, norm=norm, stem=stem)).eval()
    cfg = dict(TINY_S2S, enc_depth=TINY_VIT["depth"], attention="quadrant", norm=norm, stem=stem)
    model = Seq2Seq(Seq2SeqConfig(**cfg)).eval()
    model.init_encoder_from(vit)
    grid = torch.rand(2, 1, 56, 56)
    tokens, _ = model.forward_features(grid)
    quads = to_quadrants(tokens, model.cfg.patch_side)  # (B, 4, 16, D)
    for q, (y, x) in enumerate([(0, 0), (0, 28), (28, 0), (28, 28)]):
        digit = grid[..., y : y + 28, x : x + 28]
        expected = vit.patch(digit) + vit.pos[:, 1:]  # the ViT's own patch tokens, no CLS
        for block in vit.encoder:
            expected, _ = block(expected)
        torch.testing.assert_close(quads[:, q], vit.norm(expected))


def test_encoder_start_refuses_a_vit_of_another_layout():
    vit = ViT(ViTConfig(**dict(TINY_VIT, dim=48)))
    model = Seq2Seq(Seq2SeqConfig(**dict(TINY_S2S, enc_depth=3)))
    with pytest.raises(ValueError, match="dim, depth"):
        model.init_encoder_from(vit)
    vit = ViT(ViTConfig(**dict(TINY_VIT, stem=4)))
    model = Seq2Seq(Seq2SeqConfig(**dict(TINY_S2S, enc_depth=TINY_VIT["depth"])))
    with pytest.raises(ValueError, match="stem"):
        model.init_encoder_from(vit)


def test_stem_changes_the_patch_tokens_and_keeps_their_scale():
    torch.manual_seed(0)
    images = torch.rand(4, 1, 28, 28)
    plain = ViT(ViTConfig(**TINY_VIT)).patch
    stem = ViT(ViTConfig(**TINY_VIT, stem=8)).patch
    assert plain.proj.in_channels == 1 and len(plain.stem) == 0
    assert stem.proj.in_channels == 8 and stem(images).shape == plain(images).shape == (4, 16, 32)
    features = stem.stem((images - 0.1307) / 0.3081)  # He-initialized: no vanishing signal
    assert 0.2 < features.std().item() < 5


def test_causal_mask_hides_the_future():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(**TINY_S2S)).eval()
    memory = model.encode(torch.rand(2, 1, 56, 56))
    tokens = torch.tensor([[10, 1, 2, 3], [10, 4, 5, 6]])
    later = tokens.clone()
    later[:, 3] = torch.tensor([9, 0])
    a, _ = model.decode(tokens, memory)
    b, _ = model.decode(later, memory)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])


@pytest.mark.parametrize("memory", ["quadrants", "patches"])
def test_cached_and_uncached_generation_agree(memory):
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(**TINY_S2S, memory=memory)).eval()
    images = torch.rand(6, 1, 56, 56)
    digits, probs = model.generate(images)
    digits_nc, probs_nc = model.generate(images, use_cache=False)
    assert digits.shape == (6, 4) and probs.shape == (6, 4, 10)
    assert torch.equal(digits, digits_nc)
    torch.testing.assert_close(probs, probs_nc, atol=1e-6, rtol=1e-5)
    # greedy generation equals teacher forcing on its own output
    with torch.no_grad():
        forced = model(images, digits).softmax(-1)
    torch.testing.assert_close(forced, probs, atol=1e-6, rtol=1e-5)


def test_kv_cache_grows_a_step_at_a_time_and_follows_reordering():
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(**TINY_S2S)).eval()
    images = torch.rand(3, 1, 56, 56)
    with torch.no_grad():
        memory = model.encode(images)
        cache = model.new_cache()
        assert isinstance(cache, KVCache) and cache.length == 0
        tokens = model.start_tokens(3, images.device)
        for step in range(1, 4):
            p = model.next_probs(tokens, memory, cache)
            assert cache.length == step
            torch.testing.assert_close(p, model.next_probs(tokens, memory), atol=1e-6, rtol=1e-5)
            tokens = torch.cat([tokens, p.argmax(-1, keepdim=True)], 1)
        before = [kv.k.clone() for kv in cache.self_attn]
        cache.reorder(torch.tensor([2, 0]))
        assert cache.length == 3 and cache.self_attn[0].k.shape[0] == 2
        assert all(torch.equal(kv.k, old[[2, 0]]) for kv, old in zip(cache.self_attn, before))


def _sequence_log_prob(model, images, digits):
    """log P(digits) under teacher forcing, (B,)."""
    start = torch.full_like(digits[:, :1], model.cfg.start_token)
    logits, _ = model.decode(torch.cat([start, digits[:, :-1]], 1), model.encode(images))
    return logits.float().log_softmax(-1).gather(-1, digits[..., None]).squeeze(-1).sum(-1)


def test_beam_search_of_one_is_greedy_and_wider_beams_score_no_worse():
    from digitformer.models import build_model
    from helpers import TINY

    torch.manual_seed(0)
    model = build_model("encoder-decoder", TINY["encoder-decoder"]).eval()
    with torch.no_grad():  # make each step lean on the previous digit, so that greedy can err
        model.token_embed.weight.mul_(100)
        model.head.weight.mul_(5)
    images = torch.rand(32, 1, 56, 56)
    greedy, greedy_probs = model.generate(images)
    one, one_probs = model.generate(images, beam_size=1)
    assert torch.equal(one, greedy)
    beam1, beam1_probs = model.beam_search(images, beam_size=1)
    assert torch.equal(beam1, greedy)
    torch.testing.assert_close(beam1_probs, greedy_probs)
    beam, probs = model.generate(images, beam_size=5)
    with torch.no_grad():
        beam_score = _sequence_log_prob(model, images, beam)
        greedy_score = _sequence_log_prob(model, images, greedy)
    assert (beam_score >= greedy_score - 1e-4).all()
    assert (beam != greedy).any(dim=1).any()  # the search found other sequences somewhere
    # the probabilities returned are those the beam's own steps chose from
    chosen = probs.gather(-1, beam[..., None]).squeeze(-1).log().sum(-1)
    torch.testing.assert_close(chosen, beam_score, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="beam_size"):
        model.beam_search(images, beam_size=11)


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.rand(4000, 3, 8) + 1
    out = drop_path(x, 0.25, training=True)
    dropped = (out == 0).all(-1).all(-1)
    kept = ~dropped
    torch.testing.assert_close(out[kept], x[kept] / 0.75)  # kept samples scaled, not changed
    assert abs(dropped.float().mean().item() - 0.25) < 0.03
    assert abs(out.mean().item() / x.mean().item() - 1) < 0.03
    assert drop_path(x, 0.25, training=False) is x
    assert drop_path_rates(0.1, 3) == pytest.approx([0.0, 0.05, 0.1])
    assert drop_path_rates(0.1, 1) == [0.0]


@pytest.mark.parametrize("kind", ["encoder-only", "encoder-decoder"])
def test_drop_path_only_acts_while_training(kind):
    """Evaluation ignores stochastic depth; training with it differs from training without."""
    tiny = TINY_VIT if kind == "encoder-only" else TINY_S2S
    torch.manual_seed(0)
    plain = build_model(kind, tiny)
    deep = build_model(kind, {**tiny, "drop_path": 0.5})
    deep.load_state_dict(plain.state_dict())
    shape = (6, 1, 28, 28) if kind == "encoder-only" else (6, 1, 56, 56)
    images, targets = torch.rand(shape), torch.randint(0, 10, (6, 4))
    args = (images,) if kind == "encoder-only" else (images, targets)
    torch.testing.assert_close(deep.eval()(*args), plain.eval()(*args))
    torch.manual_seed(1)
    assert not torch.allclose(deep.train()(*args), plain.train()(*args))
