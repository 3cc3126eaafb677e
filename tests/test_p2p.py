"""Prompt-to-Prompt attention control (date_edit.p2p) on the tiny random-weight SD and SDXL UNets, CPU."""

import json
from types import SimpleNamespace

import pytest
import torch

from date_edit import sampling
from date_edit.errors import ConfigError
from date_edit.p2p import (
    AttentionController,
    P2PAttnProcessor,
    P2PConfig,
    P2PDenoiser,
    attention_control,
    changed_tokens,
    changed_words,
    check_supported,
    token_alignment,
    word_token_indices,
)

TIMESTEPS = [999, 749, 499, 249]  # a 4-step run
N = len(TIMESTEPS)
EXACT = 1e-5  # fp32: the explicit softmax and SDPA agree to ~1e-6 per branch


@pytest.fixture(scope="module")
def tiny_sdxl():
    """The built-in tiny SDXL backbone (random weights, CPU, fp32)."""
    from date_edit.backbones import load_backbone

    return load_backbone("tiny-sdxl", device="cpu")


@pytest.fixture(params=["tiny", "tiny-sdxl"])
def backbone(request, tiny_backbone, tiny_sdxl):
    """Each family P2P supports."""
    return tiny_backbone if request.param == "tiny" else tiny_sdxl


def trajectory(batch: int, seed: int = 0, hw: int = 8) -> torch.Tensor:
    """A stand-in for the inversion's ``x_ts``: ``(N + 1, B, 4, hw, hw)``."""
    return torch.randn(N + 1, batch, 4, hw, hw, generator=torch.Generator().manual_seed(seed))


def p2p(backbone, source: str, target: str, batch: int = 2, xs=None, **config) -> tuple:
    """(controller, denoiser, x_ts, source cond, target cond, uncond) of a run ``source`` -> ``target``."""
    xs = trajectory(batch) if xs is None else xs
    controller = AttentionController.from_prompts(P2PConfig(**config), backbone.tokenizer, source, target,
                                                  run_steps=N, batch=batch)
    src, tgt = backbone.encode_condition([source] * batch), backbone.encode_condition([target] * batch)
    denoiser = P2PDenoiser(backbone, controller, source_x_ts=xs, timesteps=TIMESTEPS, source_cond=src)
    return controller, denoiser, xs, src, tgt, backbone.unconditional(batch)


def guided(backbone, denoiser, x, i, cond, uncond, w=2.0) -> torch.Tensor:
    """P2P's guided eps at step ``i`` inside the control block."""
    with torch.no_grad(), attention_control(backbone.unet, denoiser.controller):
        return denoiser.guided_eps(x, TIMESTEPS[i], cond, uncond, w)


def test_inactive_processors_reproduce_the_stock_unet(backbone):
    """Installed but not in a P2P call (DATE's gradient pass, the inversion): the original processors run."""
    x, cond = trajectory(2)[1], backbone.encode_condition(["a red circle", "a blue square"])
    controller, denoiser, *_ = p2p(backbone, "a red circle", "a blue circle")
    with torch.no_grad():
        ref = backbone.denoise(x, 500, cond)
        with attention_control(backbone.unet, controller):
            assert all(isinstance(p, P2PAttnProcessor) for p in backbone.unet.attn_processors.values())
            inside = backbone.denoise(x, 500, cond)
            denoiser(x, TIMESTEPS[1], cond)  # a controlled call in between leaves no state behind
            after = backbone.denoise(x, 500, cond)
    assert (inside - ref).abs().max() < EXACT and (after - ref).abs().max() < EXACT


def test_explicit_attention_matches_diffusers_attn_processor(backbone):
    """Every layer computed explicitly and 'edited' with identical maps equals diffusers' AttnProcessor."""
    from diffusers.models.attention_processor import AttnProcessor

    controller, denoiser, xs, src, *_ = p2p(backbone, "a red circle", "a red circle", cross_replace=1.0,
                                            self_replace=1.0)
    controller.self_max_tokens = 10**6  # every self-attention layer too
    saved = backbone.unet.attn_processors
    try:
        backbone.unet.set_attn_processor(AttnProcessor())
        with torch.no_grad():
            ref = backbone.denoise(xs[2], TIMESTEPS[2], src)
    finally:
        backbone.unet.set_attn_processor(dict(saved))  # it empties the dict it is given
    with torch.no_grad(), attention_control(backbone.unet, controller):
        eps = denoiser(xs[2], TIMESTEPS[2], src)
    n_attn = len(saved) // 2
    assert controller.edits == {"cross": n_attn, "self": n_attn}
    assert (eps - ref).abs().max() < EXACT


def test_attention_control_restores_processors_on_exit_and_on_error(tiny_backbone):
    """Identity of every original processor after a normal exit, an error, a nested install; adapters refused."""
    unet = tiny_backbone.unet
    controller = p2p(tiny_backbone, "a red circle", "a blue circle")[0]
    before = dict(unet.attn_processors)

    def same() -> bool:
        now = unet.attn_processors
        return now.keys() == before.keys() and all(now[k] is before[k] for k in before)

    with attention_control(unet, controller):
        assert not same()
    assert same()
    with pytest.raises(KeyError, match="boom"), attention_control(unet, controller):
        raise KeyError("boom")
    assert same()
    with pytest.raises(RuntimeError, match="already installed"), attention_control(unet, controller):
        with attention_control(unet, controller):
            pass
    assert same()

    class AdapterProcessor:  # not plain attention: P2P would silently drop what it adds
        def __call__(self, *args, **kwargs):
            raise AssertionError

    name = next(iter(before))
    unet.set_attn_processor({**before, name: AdapterProcessor()})
    try:
        with pytest.raises(ConfigError, match="AdapterProcessor"), attention_control(unet, controller):
            pass
        assert type(unet.attn_processors[name]).__name__ == "AdapterProcessor"
    finally:
        unet.set_attn_processor(dict(before))
    assert same()


def test_identical_prompts_equal_plain_guidance(backbone):
    """Replacing maps by identical maps is the identity: P2P's 3B call equals the loop's plain CFG."""
    controller, denoiser, xs, src, _, uncond = p2p(backbone, "a red circle", "a red circle", cross_replace=1.0,
                                                   self_replace=1.0)
    for i in (0, 3):
        eps = guided(backbone, denoiser, xs[i], i, src, uncond)
        with torch.no_grad():
            ref = sampling.guided_eps(backbone, xs[i], TIMESTEPS[i], src, uncond, 2.0)
        assert (eps - ref).abs().max() < EXACT
    assert controller.edits["cross"] > 0 and controller.edits["self"] > 0


def test_replace_changes_the_target_and_only_inside_its_window(tiny_backbone):
    """cross 0.5 of 4 steps edits steps 0-1 only; without control the source rows change nothing."""
    b = tiny_backbone
    _, plain, xs, _, tgt, uncond = p2p(b, "a red circle", "a blue circle", cross_replace=0.0, self_replace=0.0)
    _, replace, *_ = p2p(b, "a red circle", "a blue circle", cross_replace=0.5, self_replace=0.0)
    with torch.no_grad():
        stock = [sampling.guided_eps(b, xs[i], TIMESTEPS[i], tgt, uncond, 2.0) for i in range(N)]
    no_control = [guided(b, plain, xs[i], i, tgt, uncond) for i in range(N)]
    controlled = [guided(b, replace, xs[i], i, tgt, uncond) for i in range(N)]
    assert replace.controller.cross_steps == 2
    # no control: the source rows in the same call do not leak into the target's
    assert all((e - s).abs().max() < EXACT for e, s in zip(no_control, stock))
    assert all((controlled[i] - stock[i]).abs().max() > 1e-3 for i in (0, 1))  # inside the window
    assert all((controlled[i] - stock[i]).abs().max() < EXACT for i in (2, 3))  # after it


def test_self_injection_changes_the_output_when_latents_differ(tiny_backbone):
    """Self-attention from the source's latent changes the target's eps when x_t is not the source's."""
    b = tiny_backbone
    x = trajectory(2, seed=1)[0]  # not the source's latent
    _, off, _, src, _, uncond = p2p(b, "a red circle", "a red circle", cross_replace=0.0, self_replace=0.0)
    controller, on, *_ = p2p(b, "a red circle", "a red circle", cross_replace=0.0, self_replace=1.0)
    assert (guided(b, on, x, 0, src, uncond) - guided(b, off, x, 0, src, uncond)).abs().max() > 1e-3
    assert controller.edits == {"cross": 0, "self": 4}  # the tiny UNet's 4 self-attention layers, one call


def test_refine_and_reweight_run_and_reweight_one_is_the_identity(tiny_backbone):
    """Refine (a word added, B = 1) edits; reweight 1 changes nothing, 2 changes the eps."""
    b = tiny_backbone
    controller, refine, xs, _, tgt, uncond = p2p(b, "a red circle", "a big red circle", batch=1, xs=trajectory(1),
                                                 cross_replace=1.0, self_replace=0.0)
    assert controller.mode == "refine"
    _, plain, *_ = p2p(b, "a red circle", "a big red circle", batch=1, xs=trajectory(1), cross_replace=0.0,
                       self_replace=0.0)
    assert (guided(b, refine, xs[0], 0, tgt, uncond) - guided(b, plain, xs[0], 0, tgt, uncond)).abs().max() > 1e-3

    base = p2p(b, "a red circle", "a blue circle", cross_replace=1.0, self_replace=0.0)
    one = p2p(b, "a red circle", "a blue circle", cross_replace=1.0, self_replace=0.0, reweight=(("blue", 1.0),))
    two = p2p(b, "a red circle", "a blue circle", cross_replace=1.0, self_replace=0.0, reweight=[["blue", 2.0]])
    xs, tgt, uncond = base[2], base[4], base[5]
    eps = [guided(b, run[1], xs[0], 0, tgt, uncond) for run in (base, one, two)]
    assert (eps[1] - eps[0]).abs().max() < 1e-6
    assert (eps[2] - eps[0]).abs().max() > 1e-3
    assert two[0].reweight.tolist()[:4] == [1.0, 1.0, 2.0, 1.0]


def test_token_alignment_on_the_clip_tokenizer(tiny_backbone):
    """Replace and refine mappers on the real CLIP tokenizer; changed tokens and words."""
    tok = tiny_backbone.tokenizer
    mapper, alphas, mode = token_alignment(tok, "a red circle", "a blue circle")
    assert mode == "replace" and torch.equal(mapper, torch.arange(77)) and bool((alphas == 1).all())
    # [BOS a red circle EOS pad...] -> [BOS a big red circle EOS pad...]
    mapper, alphas, mode = token_alignment(tok, "a red circle", "a big red circle")
    assert mode == "refine" and mapper.shape == alphas.shape == (77,)
    assert alphas[:6].tolist() == [1, 1, 0, 1, 1, 1] and bool((alphas[6:] == 1).all())
    assert [mapper[j].item() for j in (0, 1, 3, 4)] == [0, 1, 2, 3]  # BOS, a, red, circle shifted by one
    assert mapper[5].item() == 4  # EOS -> EOS
    assert mapper[6].item() == 5 and mapper[76].item() == 75  # padding -> the source's padding
    # a word removed: the source's padding is further along, clipped at the end
    mapper, alphas, mode = token_alignment(tok, "a big red circle", "a red circle")
    assert mode == "refine" and mapper[:5].tolist() == [0, 1, 3, 4, 5] and mapper[76].item() == 76
    assert changed_tokens(tok, "a red circle", "a big red circle") == ([], [2])
    assert changed_tokens(tok, "a red circle and a red square", "a blue circle and a red square") == ([2], [2])
    assert changed_words("a red circle and a red square", "a blue circle and a Red square.") == (["red"], ["blue"])
    assert changed_words("a red circle", "a big red circle") == ([], ["big"])


def test_word_token_indices(tiny_backbone):
    """Every occurrence's pieces, whole words only, one-line ConfigError for a missing word."""
    tok = tiny_backbone.tokenizer
    prompt = "a photorealistic hippopotamus, a red hippopotamus"
    pieces = len(tok("hippopotamus", add_special_tokens=False).input_ids)
    assert pieces == 3
    # BOS a photo realistic hippo potam us , a red hippo potam us EOS
    assert word_token_indices(tok, prompt, "hippopotamus") == [4, 5, 6, 10, 11, 12]
    assert word_token_indices(tok, prompt, "red hippopotamus") == [9, 10, 11, 12]
    assert word_token_indices(tok, prompt, "Photorealistic") == [2, 3]
    with pytest.raises(ConfigError, match="'photo' is not a word"):
        word_token_indices(tok, prompt, "photo")  # a piece of a word is not the word
    with pytest.raises(ConfigError, match="reweight 'zebra'"):
        word_token_indices(tok, prompt, "zebra")


def test_check_supported_refuses_joint_attention(tiny_backbone, tiny_sdxl):
    """SD and SDXL pass; SD3 (the real tiny backbone) and FLUX get a one-line ConfigError."""
    from date_edit.backbones import load_backbone

    check_supported(tiny_backbone)
    check_supported(tiny_sdxl)
    with pytest.raises(ConfigError, match="p2p Prompt-to-Prompt needs cross-attention .*sd3 uses joint attention"):
        check_supported(load_backbone("tiny-sd3", device="cpu"))
    with pytest.raises(ConfigError, match="flux uses joint attention: use a mask instead"):
        check_supported(SimpleNamespace(family="flux"))


def test_local_blend_mask(tiny_backbone):
    """After one controlled call: a (B, 1, h, w) mask in {0, 1}; the loop callback blends with x_ts[i + 1]."""
    b = tiny_backbone
    controller, denoiser, xs, _, tgt, uncond = p2p(b, "a red circle", "a blue circle", local_blend=True,
                                                   cross_replace=0.5, self_replace=0.0)
    assert controller.blend_tokens_source == controller.blend_tokens_target == (2,)
    assert controller.blend_mask((8, 8)) is None
    guided(b, denoiser, xs[3], 3, tgt, uncond)  # after the cross window: maps are still recorded
    mask = controller.blend_mask((8, 8))
    assert mask.shape == (2, 1, 8, 8) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and bool((mask.flatten(1).amax(1) == 1).all())
    assert controller.blend_mask((8, 8), cumulative=True).shape == (2, 1, 8, 8)
    # the loop's blend callback: m x_prev + (1 - m) x_src[i + 1]
    x_prev = torch.randn(2, 4, 8, 8)
    state = sampling.StepState(index=3, t=TIMESTEPS[3], x_t=xs[3], cond=tgt, x_prev=x_prev)
    assert torch.allclose(denoiser.local_blend(state), mask * x_prev + (1 - mask) * xs[4])
    # prompts that differ in no word: the blend mask is empty, so nothing may change (exact reconstruction)
    same = p2p(b, "a red circle", "a red circle", local_blend=True)[0]
    assert same.blend_tokens_source == () and same.blend_tokens_target == ()


def test_blend_mask_upsamples_thresholds_unites_and_dilates():
    """The mask's math on hand-made 4 x 4 maps: the source's word peaks top left, the target's bottom right."""
    controller = AttentionController(P2PConfig(local_blend=True, blend_threshold=0.5), run_steps=N, batch=1,
                                     mapper=torch.arange(77), alphas=torch.ones(77), mode="replace",
                                     blend_tokens_source=[2], blend_tokens_target=[2])
    maps = torch.full((2, 1, 16), 0.1)
    maps[0, 0, 0], maps[1, 0, 15], maps[1, 0, 14] = 1.0, 2.0, 0.9  # 0.9 < 0.5 * 2: below the target's threshold
    controller._step_maps = {(4, 4): maps}
    expected = torch.zeros(8, 8)
    expected[:3, :3] = 1  # cell (0, 0) -> latent rows/cols 0-1, dilated by one
    expected[5:, 5:] = 1  # cell (3, 3) -> 6-7, dilated by one
    assert torch.equal(controller.blend_mask((8, 8)), expected[None, None])


def test_config_validation_and_json_round_trip():
    """Bad values name their parameter; to_dict survives JSON and rebuilds the same config."""
    config = P2PConfig(cross_replace=0.6, self_replace=0.2, reweight={"red": 2}, local_blend=True)
    assert config.reweight == (("red", 2.0),)
    assert P2PConfig(**json.loads(json.dumps(config.to_dict()))) == config
    for bad, name in (({"cross_replace": 1.5}, "cross_replace"), ({"self_replace": float("nan")}, "self_replace"),
                      ({"reweight": (("red", -1.0),)}, "reweight"), ({"reweight": ("red",)}, "reweight"),
                      ({"reweight": (("red", 2.0),), "cross_replace": 0.0}, "reweight"),
                      ({"blend_threshold": 1.0}, "blend_threshold"), ({"local_blend": "yes"}, "local_blend")):
        with pytest.raises(ConfigError) as info:
            P2PConfig(**bad)
        assert info.value.param == name


def test_denoiser_reads_the_run_from_the_full_trajectory(tiny_backbone):
    """The whole ``Inversion.x_ts`` (skip steps before the run) and its ``[skip:]`` slice index the same latents."""
    controller = AttentionController.from_prompts(P2PConfig(), tiny_backbone.tokenizer, "a", "b", run_steps=N,
                                                  batch=1)
    full = torch.randn(N + 4, 1, 4, 8, 8)  # 3 skipped steps
    cond = tiny_backbone.encode_condition(["a"])
    whole = P2PDenoiser(tiny_backbone, controller, source_x_ts=full, timesteps=TIMESTEPS, source_cond=cond)
    tail = P2PDenoiser(tiny_backbone, controller, source_x_ts=full[3:], timesteps=TIMESTEPS, source_cond=cond)
    assert torch.equal(whole.source_latent(0), full[3]) and torch.equal(tail.source_latent(N), full[-1])
    assert whole.step_index(TIMESTEPS[2]) == 2
    with pytest.raises(ValueError, match="not one of the run's"):
        whole.step_index(123)
    with pytest.raises(ValueError, match="M >= 5"):
        P2PDenoiser(tiny_backbone, controller, source_x_ts=full[:4], timesteps=TIMESTEPS, source_cond=cond)
