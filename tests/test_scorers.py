"""Scorers (issue 4): ImageReward on transformers 5, PickScore, aesthetic, open_clip; preprocessing parity with each
library's own PIL pipeline; the ``scorers``/``score`` commands; entry-point plugins. Offline, CPU, random weights."""

import copy
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "chelsea.png"
PLUGIN = Path(__file__).resolve().parent / "fixtures" / "scorer_plugin"
TINY_SPECS = ["clip:tiny", "clip:openclip-tiny", "imagereward:tiny", "pickscore:tiny", "aesthetic:tiny"]
PROMPT = "a cat wearing a hat"


def as_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) float in [0, 1], as ToTensor."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def photos() -> dict:
    """A 451x300 photo (downsampled by every scorer) and a 150x100 crop of it (upsampled to 224 by ImageReward)."""
    cat = Image.open(SAMPLE).convert("RGB")
    return {"chelsea": cat, "crop": cat.crop((100, 50, 250, 150))}


@pytest.fixture(scope="module")
def tiny():
    """Each tiny scorer, built once."""
    from date_edit.scorers import build_scorer

    return {spec: build_scorer(spec) for spec in TINY_SPECS}


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# ------------------------------------------------------------------------------------------------ registry


def test_builtins_are_registered_with_their_listing_fields():
    from date_edit.scorers import available_scorers

    reg = available_scorers()
    for name in ("clip", "imagereward", "pickscore", "aesthetic"):
        info = reg[name]
        assert info.differentiable and info.backend and info.default_weights
        assert info.cached() in (True, False, None)


def test_every_tiny_scorer_is_finite_and_differentiable(tiny, photos):
    x = as_tensor(photos["chelsea"]).requires_grad_(True)
    for spec, scorer in tiny.items():
        x.grad = None
        value = scorer(x, [PROMPT])
        assert value.shape == (1,) and torch.isfinite(value).all(), spec
        value.sum().backward()
        assert scorer.differentiable and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, spec


def test_weighted_sum_of_new_scorers(tiny, photos):
    from date_edit.scorers import build_scorer

    combo = build_scorer("clip:tiny=1,imagereward:tiny=0.5,aesthetic:tiny=0.25", require_differentiable=True)
    assert combo.differentiable and set(combo.components()) == {"clip:tiny", "imagereward:tiny", "aesthetic:tiny"}
    x = as_tensor(photos["chelsea"])
    with torch.no_grad():
        expected = tiny["clip:tiny"](x, [PROMPT]) + 0.5 * tiny["imagereward:tiny"](x, [PROMPT]) \
            + 0.25 * tiny["aesthetic:tiny"](x, [PROMPT])
        assert torch.allclose(combo(x, [PROMPT]), expected, atol=1e-5)
    # each term alone has a non-zero image gradient: DATE's gradient flows through both clip and imagereward
    for spec in ("clip:tiny", "imagereward:tiny"):
        xg = x.clone().requires_grad_(True)
        combo.components()[spec](xg, [PROMPT]).sum().backward()
        assert xg.grad.abs().sum() > 0, spec


# -------------------------------------------------------------------------------------------- preprocessing


def test_resize_matches_pil_to_the_pixel(photos):
    from torchvision import transforms as T

    from date_edit.scorers.preprocess import center_crop, resize_shorter

    for name, image in photos.items():
        for size in (224, 32):
            ref = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                             T.ToTensor()])(image)[None]
            ours = center_crop(resize_shorter(as_tensor(image), size), size)
            assert ours.shape == ref.shape
            diff = (ours - ref).abs() * 255
            assert diff.max() <= 1.0 + 1e-3, (name, size, float(diff.max()))  # at most one 8-bit step
            assert (diff < 1e-3).float().mean() >= 0.999, (name, size)


def test_straight_through_rounding_keeps_the_gradient():
    from date_edit.scorers.preprocess import quantize_8bit, resize_shorter

    x = torch.rand(1, 3, 40, 60, requires_grad=True)
    q = quantize_8bit(x)
    assert torch.allclose(q * 255, (q * 255).round(), atol=1e-4)
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    x.grad = None
    resize_shorter(x, 16).sum().backward()
    assert x.grad.abs().sum() > 0


def test_a_float_image_scores_as_its_saved_png(tiny):
    from date_edit.imaging import to_pil

    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    scorer = tiny["imagereward:tiny"]
    with torch.no_grad():
        assert torch.allclose(scorer(x, [PROMPT]), scorer(as_tensor(to_pil(x)[0]), [PROMPT]), atol=1e-6)


# --------------------------------------------------------------------------- parity with the libraries' own paths


def test_imagereward_matches_its_own_score(tiny, photos):
    scorer = tiny["imagereward:tiny"]
    for name, image in photos.items():
        with torch.no_grad():
            ours = float(scorer(as_tensor(image), [PROMPT])[0])
            ref = scorer.model.score(PROMPT, image)  # the package's PIL preprocessing + tokenizer + heads
        assert rel(ours, ref) <= 1e-3, (name, ours, ref)


def test_openclip_matches_its_own_preprocess(tiny, photos):
    import open_clip

    scorer = tiny["clip:openclip-tiny"]
    cfg = scorer.model.visual.preprocess_cfg
    preprocess = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                           resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"])
    tokenizer = open_clip.get_tokenizer("date-edit-openclip-tiny")
    for name, image in photos.items():
        with torch.no_grad():
            img = scorer.model.encode_image(preprocess(image)[None])
            txt = scorer.model.encode_text(tokenizer([PROMPT]))
            ref = float(torch.nn.functional.cosine_similarity(img, txt)[0])
            ours = float(scorer(as_tensor(image), [PROMPT])[0])
        assert rel(ours, ref) <= 1e-3, (name, ours, ref)


def _clip_processor():
    from transformers import CLIPProcessor

    from date_edit.scorers.pickscore import tiny_image_processor
    from date_edit.tokenizer import load_clip_tokenizer

    return CLIPProcessor(image_processor=tiny_image_processor(32), tokenizer=load_clip_tokenizer())


def _features(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@pytest.mark.parametrize("spec", ["pickscore:tiny", "clip:tiny"])
def test_transformers_clip_scorers_match_clip_processor(tiny, photos, spec):
    scorer = tiny[spec]
    processor = _clip_processor()
    for name, image in photos.items():
        with torch.no_grad():
            img = _features(scorer.model.get_image_features(**processor(images=image, return_tensors="pt")))
            text = processor(text=[PROMPT], padding=True, truncation=True, max_length=77, return_tensors="pt")
            txt = _features(scorer.model.get_text_features(**text))
            img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
            cosine = float((img * txt).sum())
            # PickScore's reference: logit_scale.exp() * text_embs @ image_embs.T
            ref = cosine * float(scorer.model.logit_scale.exp()) if spec.startswith("pickscore") else cosine
            ours = float(scorer(as_tensor(image), [PROMPT])[0])
        assert rel(ours, ref) <= 1e-3, (spec, name, ours, ref)


def test_aesthetic_matches_processor_and_reference_mlp(tiny, photos, tmp_path):
    from date_edit.scorers import ir_compat
    from date_edit.scorers.aesthetic import load_mlp
    from date_edit.scorers.pickscore import tiny_image_processor

    ir_compat.install()
    from ImageReward.models.AestheticScore import MLP  # the predictor's MLP as the image-reward package ships it

    scorer = tiny["aesthetic:tiny"]
    reference = MLP(32).eval()
    reference.load_state_dict(scorer.mlp.state_dict())  # strict: the checkpoint layout is the same
    torch.save(scorer.mlp.state_dict(), tmp_path / "mlp.pth")
    assert torch.equal(load_mlp(tmp_path / "mlp.pth", 32).layers[7].weight, scorer.mlp.layers[7].weight)
    processor = tiny_image_processor(32)
    for name, image in photos.items():
        with torch.no_grad():
            emb = scorer.vision(**processor(images=image, return_tensors="pt")).image_embeds
            ref = float(reference(emb / emb.norm(dim=-1, keepdim=True))[0, 0])
            ours = float(scorer(as_tensor(image), [PROMPT])[0])
        assert rel(ours, ref) <= 1e-3, (name, ours, ref)


def test_aesthetic_alone_warns_once_combined_does_not():
    from date_edit.scorers.aesthetic import warn_if_aesthetic_alone

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert warn_if_aesthetic_alone("aesthetic")
        assert warn_if_aesthetic_alone("aesthetic:tiny=1,clip=0")
        assert not warn_if_aesthetic_alone("clip=1,aesthetic=0.1")
        assert not warn_if_aesthetic_alone("imagereward:tiny")
    assert len(caught) == 2 and "\n" not in str(caught[0].message)


# ------------------------------------------------------------------------------- the transformers-5 compat layer


@pytest.fixture(scope="module")
def blip():
    """The patched BLIP modules and the tiny model's text encoder."""
    from date_edit.scorers import ir_compat
    from date_edit.scorers.imagereward import tiny_imagereward_model

    ir_compat.install()
    med = sys.modules["ImageReward.models.BLIP.med"]
    return med, tiny_imagereward_model()


def test_fix1_pruning_helpers_are_exported_and_prune_correctly(blip):
    import transformers.modeling_utils as mu

    from date_edit.scorers.ir_compat import find_pruneable_heads_and_indices

    for name in ("apply_chunking_to_forward", "prune_linear_layer", "find_pruneable_heads_and_indices"):
        assert callable(getattr(mu, name))
    heads, index = find_pruneable_heads_and_indices([1], 4, 2, set())
    assert heads == {1} and index.tolist() == [0, 1, 4, 5, 6, 7]
    # head 0 already gone: original head 2 is now the second of three
    heads, index = find_pruneable_heads_and_indices([2, 0], 3, 2, {0})
    assert heads == {2} and index.tolist() == [0, 1, 4, 5]
    med, model = blip
    attention = copy.deepcopy(model.blip.text_encoder.encoder.layer[0].attention)
    attention.prune_heads([3])  # exercises the med.py pruning code on transformers 5
    assert attention.self.query.out_features == 768 - 64 and attention.self.num_attention_heads == 11


def test_fix2_bert_builds_and_is_initialised(blip):
    med, model = blip
    encoder = model.blip.text_encoder
    assert isinstance(encoder, med.BertModel) and hasattr(encoder, "all_tied_weights_keys")
    std = float(encoder.embeddings.word_embeddings.weight.detach().std())
    assert 0.015 < std < 0.025  # BERT's normal(0, 0.02) init ran (not left at nn.Embedding's N(0, 1))


def test_fix3_invert_attention_mask_masks_cross_attention(blip):
    _, model = blip
    encoder = model.blip.text_encoder
    inverted = encoder.invert_attention_mask(torch.tensor([[1, 1, 0]]))
    assert inverted.shape == (1, 1, 1, 3) and inverted[0, 0, 0, :2].eq(0).all()
    assert inverted[0, 0, 0, 2] == torch.finfo(inverted.dtype).min
    ids = torch.tensor([[2, 5, 6, 3]])
    image = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(0))
    padded = torch.cat([image, torch.randn(1, 2, 32)], dim=1)
    with torch.no_grad():
        plain = encoder(ids, encoder_hidden_states=image, encoder_attention_mask=torch.ones(1, 5, dtype=torch.long),
                        return_dict=True).last_hidden_state
        masked = encoder(ids, encoder_hidden_states=padded, encoder_attention_mask=torch.tensor([[1] * 5 + [0] * 2]),
                         return_dict=True).last_hidden_state
    assert torch.allclose(plain, masked, atol=1e-5)


def test_fix4_get_head_mask(blip):
    _, model = blip
    encoder = model.blip.text_encoder
    assert encoder.get_head_mask(None, 3) == [None, None, None]
    assert encoder.get_head_mask(torch.ones(12), 2).shape == (2, 1, 12, 1, 1)
    ids = torch.tensor([[2, 5, 6, 3]])
    image = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        run = lambda mask: encoder(ids, encoder_hidden_states=image, head_mask=mask,  # noqa: E731
                                   return_dict=True).last_hidden_state
        base = run(None)
        assert torch.allclose(run(torch.ones(encoder.config.num_attention_heads)), base, atol=1e-6)
        off = torch.ones(encoder.config.num_attention_heads)
        off[0] = 0
        assert not torch.allclose(run(off), base, atol=1e-4)


def test_fix5_tokenizer_special_token_ids(blip):
    _, model = blip
    tokenizer = model.blip.tokenizer
    enc = tokenizer.convert_tokens_to_ids("[ENC]")
    assert tokenizer.additional_special_tokens_ids == [enc] and tokenizer.enc_token_id == enc
    assert tokenizer.bos_token == "[DEC]" and len(tokenizer) <= model.blip.text_encoder.config.vocab_size
    ids = tokenizer("a cat", padding="max_length", truncation=True, max_length=35).input_ids
    assert len(ids) == 35 and ids[:4] == tokenizer.convert_tokens_to_ids(["[CLS]", "a", "cat", "[SEP]"])
    assert tokenizer.unk_token_id not in ids


def test_lazy_imports_and_install_contains_the_packages_global_side_effects():
    """Listing scorers and importing the CLI module load no model library; install() leaves no global trace."""
    code = """
import json, sys, warnings
from date_edit.scorers import available_scorers
import date_edit_cli.scorers_cmd
available_scorers()
lazy = [m for m in ("ImageReward", "open_clip", "transformers") if m in sys.modules]
import transformers.modeling_utils
before = (list(warnings.filters), transformers.logging.get_verbosity())
from date_edit.scorers import ir_compat
ir_compat.install()
blanket = [f for f in warnings.filters if f[0] == "ignore" and not f[1] and f[2] is Warning and f[3] is None]
print(json.dumps({"lazy": lazy, "filters": all(f in warnings.filters for f in before[0]) and not blanket,
                  "verbosity": transformers.logging.get_verbosity() == before[1],
                  "refl": "ImageReward.ReFL" in sys.modules, "datasets": "datasets" in sys.modules}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"lazy": [], "filters": True, "verbosity": True,
                                                              "refl": False, "datasets": False}
    assert out.stderr.strip() == ""  # no pkg_resources warning, no prints


def test_checkpoint_loader_round_trip_and_refuses_missing_weights(tiny, tmp_path, photos):
    from date_edit.scorers import ScorerError
    from date_edit.scorers.imagereward import ASSETS, ImageRewardScorer, load_imagereward_checkpoint

    source = tiny["imagereward:tiny"]
    state = source.model.state_dict()
    torch.save(state, tmp_path / "ImageReward.pt")
    model = load_imagereward_checkpoint(tmp_path / "ImageReward.pt", ASSETS / "med_config_tiny.json",
                                        ASSETS / "vocab.txt", tiny_vit=True)
    x = as_tensor(photos["crop"])
    with torch.no_grad():
        assert torch.allclose(ImageRewardScorer(model, name="x")(x, [PROMPT]), source(x, [PROMPT]), atol=1e-6)
    del state["blip.text_encoder.encoder.layer.0.crossattention.self.key.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(ScorerError, match="1 weights missing"):
        load_imagereward_checkpoint(tmp_path / "broken.pt", ASSETS / "med_config_tiny.json", ASSETS / "vocab.txt",
                                    tiny_vit=True)


# ------------------------------------------------------------------------------------------------ the commands


def invoke(command, args):
    from click.testing import CliRunner

    return CliRunner().invoke(command, [str(a) for a in args])


def test_scorers_command_lists_all_builtins():
    from date_edit_cli.scorers_cmd import scorers

    result = invoke(scorers, ["--json"])
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"clip", "imagereward", "pickscore", "aesthetic"} <= set(rows)
    assert rows["imagereward"]["differentiable"] is True and rows["imagereward"]["cached"] in ("yes", "no", "unknown")
    text = invoke(scorers, [])
    assert text.exit_code == 0 and text.stdout.splitlines()[0].split()[:3] == ["name", "differentiable", "cached"]
    assert all(any(line.startswith(name + " ") for line in text.stdout.splitlines()) for name in rows)


@pytest.mark.parametrize("spec", TINY_SPECS + ["clip:tiny=1,imagereward:tiny=0.5"])
def test_score_command_prints_a_finite_score(spec):
    from date_edit_cli.scorers_cmd import score

    result = invoke(score, [SAMPLE, "--prompt", "a cat", "--scorer", spec, "--json"])
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["results"][0]["image"] == str(SAMPLE) and np.isfinite(record["results"][0]["score"])
    assert record["results"][0]["processed_size"] == [451, 300]
    if "," in spec:
        assert set(record["results"][0]["components"]) == {"clip:tiny", "imagereward:tiny"}


def test_score_command_text_output_and_size(tmp_path):
    from date_edit_cli.scorers_cmd import score

    second = tmp_path / "second.png"
    Image.open(SAMPLE).convert("RGB").crop((0, 0, 200, 120)).save(second)
    result = invoke(score, [SAMPLE, second, "-p", "a cat", "-s", "imagereward:tiny", "--size", "128"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[1].endswith(str(second)) and np.isfinite(float(lines[0].split("\t")[0]))


@pytest.mark.parametrize("args, fragment", [
    (["--scorer", "nosuch"], "unknown scorer 'nosuch'"),
    (["--scorer", "imagereward:nosuch"], "unknown imagereward variant"),
    (["--scorer", "clip:openclip/ViT-g-99/x"], "no model 'ViT-g-99'"),
])
def test_score_command_bad_scorer_is_one_line(args, fragment):
    from date_edit_cli.scorers_cmd import score

    result = invoke(score, [SAMPLE, "--prompt", "a cat", *args])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("date-edit: error:")
    assert fragment in result.stderr


def test_score_command_unreadable_image_is_one_line(tmp_path):
    from date_edit_cli.scorers_cmd import score

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    for path in (broken, tmp_path / "missing.png"):
        result = invoke(score, [path, "--prompt", "a cat", "--scorer", "clip:tiny"])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and str(path) in result.stderr


@pytest.mark.parametrize("spec, fragment", [
    ("imagereward", "hf download THUDM/ImageReward ImageReward.pt med_config.json"),
    ("aesthetic", "sac%2Blogos%2Bava1-l14-linearMSE.pth"),
    ("pickscore", "yuvalkirstain/PickScore_v1"),
    ("clip:openclip/ViT-g-14/laion2b_s12b_b42k", "open_clip.create_model('ViT-g-14', pretrained='laion2b_s12b_b42k')"),
])
def test_missing_weights_are_one_line_naming_the_download(spec, fragment, tmp_path, monkeypatch):
    from date_edit_cli.scorers_cmd import score

    from date_edit.scorers import available_scorers

    monkeypatch.setenv("HOME", str(tmp_path))  # empty ~/.cache/ImageReward
    monkeypatch.setenv("DATE_EDIT_CACHE", str(tmp_path / "date-edit"))
    if spec.startswith("clip:"):
        from date_edit.scorers.openclip import _weights_cached

        if _weights_cached("ViT-g-14", "laion2b_s12b_b42k"):
            pytest.skip("the weights are cached here")
    elif available_scorers()[spec].cached():
        pytest.skip("the weights are cached here")
    result = invoke(score, [SAMPLE, "--prompt", "a cat", "--scorer", spec])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr


def test_edit_rejects_non_differentiable_objective_in_one_line(tmp_path, monkeypatch):
    from date_edit_cli.main import main

    from date_edit.scorers import available_scorers
    from date_edit.scorers.registry import _REGISTRY, ScorerInfo

    available_scorers()
    info = ScorerInfo(name="rank-test", factory=lambda *a, **k: None, differentiable=False, backend="test",
                      default_weights="none")
    monkeypatch.setitem(_REGISTRY, "rank-test", info)
    monkeypatch.chdir(tmp_path)
    for spec, fragment in (("rank-test", "not differentiable"), ("nosuch", "unknown scorer")):
        result = invoke(main, ["edit", SAMPLE, "a dog", "--model", "tiny", "--steps", "4", "--scorer", spec])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in result.stderr


def test_edit_with_clip_and_imagereward_objective(tmp_path, monkeypatch):
    """Acceptance: DATE through clip:tiny + 0.5 imagereward:tiny; every update moves the embedding by rho = 0.5.

    In-process through the Click app (the same `edit` body and error handling as the installed command); a
    `date-edit` subprocess adds about 13 s of imports on this CPU.
    """
    from date_edit_cli.main import main

    monkeypatch.chdir(tmp_path)
    result = invoke(main, ["edit", SAMPLE, "a dog", "--model", "tiny", "--steps", "10", "--update-steps", "0,5",
                           "--scorer", "clip:tiny=1,imagereward:tiny=0.5", "--json"])
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert len(record["embedding_update_norms"]) == 2
    assert all(abs(n - 0.5) <= 1e-3 for n in record["embedding_update_norms"])
    assert set(record["scores"]) >= {"clip:tiny", "imagereward:tiny"}


# ------------------------------------------------------------------------------------------------ plugins


def test_entry_point_plugin_is_listed_built_and_checked(tmp_path):
    source, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(PLUGIN, source)  # build there: setuptools writes egg-info beside the sources
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--quiet", "--target", str(target), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    code = """
import json, torch
from date_edit.scorers import ScorerError, available_scorers, build_scorer
from date_edit_cli.scorers_cmd import scorers
scorers.main(["--json"], standalone_mode=False)
reg = available_scorers()
s = build_scorer("brightness:x", require_differentiable=True)
x = torch.full((1, 3, 8, 8), 0.25, requires_grad=True)
value = s(x, ["p"])
value.sum().backward()
try:
    build_scorer("brightness-rank", require_differentiable=True)
    error = None
except ScorerError as exc:
    error = str(exc)
print(json.dumps({"name": s.name, "value": float(value), "grad": float(x.grad.sum()), "error": error,
                  "rank": build_scorer("brightness-rank").name}))
"""
    env = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    listing, report = (json.loads(line) for line in out.stdout.strip().splitlines()[-2:])
    rows = {row["name"]: row for row in listing}
    assert rows["brightness"]["differentiable"] is True and rows["brightness"]["backend"].startswith("plugin")
    assert rows["brightness-rank"]["differentiable"] is False and rows["brightness-rank"]["cached"] == "yes"
    assert report["name"] == "brightness:x" and report["value"] == pytest.approx(0.25)
    assert report["grad"] == pytest.approx(1.0) and report["rank"] == "brightness-rank"
    assert "not differentiable" in report["error"]


# ------------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_imagereward_on_gpu_matches_cpu(tiny, photos):
    from date_edit.scorers import build_scorer

    x = as_tensor(photos["chelsea"])
    gpu = build_scorer("imagereward:tiny", device="cuda")
    xg = x.cuda().requires_grad_(True)
    value = gpu(xg, [PROMPT])
    value.sum().backward()
    assert torch.isfinite(xg.grad).all()
    with torch.no_grad():
        assert abs(float(value) - float(tiny["imagereward:tiny"](x, [PROMPT]))) < 1e-3
