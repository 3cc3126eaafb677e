"""How far the stock diffusers pipelines with DATE's callback are from ``date_edit.generate`` (issue 30), per family.

    python -m benchmarks.studies.callback_parity        # tiny SD, SDXL, SD3, FLUX on the CPU, about a minute

For each tiny random-weight model: the stock pipeline (its own scheduler) against ``generate`` with the same noise,
6 steps, guidance 4, without DATE and with DATE (rho 1, updates at steps 0 and 4; SDXL and SD3 move tokens and pooled
embeddings): the largest absolute difference of the final latents, and the latents' largest magnitude. Also edit-
friendly editing inside the stock SD/SDXL pipeline (``date_edit.stock_edit``) against ``date_edit.edit``, 10 steps,
skip 3. Writes benchmarks/results/callback_parity.{json,md}.
"""

from __future__ import annotations

import json
from pathlib import Path


import torch

RESULTS = Path(__file__).resolve().parents[1] / "results"
STEPS, GUIDANCE = 6, 4.0


def generation_row(family: str, scorer) -> dict:
    """Max |stock - generate| of the final latents without and with DATE, and max |latents|."""
    from date_edit.backbones import Backbone, tiny_pipeline
    from date_edit.callback import DateCallback
    from date_edit.date import DateConfig
    from date_edit.pipeline import GenerateConfig, generate

    pipe = tiny_pipeline(family)
    backbone = Backbone.from_pipeline(pipe)
    side = backbone.native_size // backbone.vae_scale_factor
    noise = torch.randn((1, backbone.latent_channels, side, side), generator=torch.Generator().manual_seed(0))
    row = {"family": family}
    date = DateConfig(update_steps="0,4", rho=1.0, targets="all" if family in ("sdxl", "sd3") else "tokens")
    for label, config in (("plain", None), ("date", date)):
        ours = generate(backbone, "a cat", scorer=scorer,
                        config=GenerateConfig(steps=STEPS, seed=0, date=config, guidance_scale=GUIDANCE)).latents
        if config is None:
            out = pipe("a cat", num_inference_steps=STEPS, guidance_scale=GUIDANCE, output_type="latent",
                       height=backbone.native_size, width=backbone.native_size,
                       latents=backbone.pack(noise) if family == "flux" else noise).images
        else:
            callback = DateCallback(pipe, "a cat", scorer=scorer, config=config)
            out = pipe(**callback.prepare(num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=noise),
                       output_type="latent").images
        out = backbone.unpack(out, tuple(noise.shape)) if out.dim() == 3 else out
        row[f"{label}_max_abs_diff"] = float((out.float() - ours).abs().max())
        row["max_abs_latent"] = float(ours.abs().max())
    return row


def edit_row(family: str) -> dict:
    """Max |stock edit-friendly pipeline - edit| of the final latents, and of the source prompt's round trip."""
    from date_edit.backbones import Backbone, tiny_pipeline
    from date_edit.pipeline import EditConfig, edit, invert_image
    from date_edit.stock_edit import edit_friendly_pipeline

    pipe = tiny_pipeline(family)
    backbone = Backbone.from_pipeline(pipe)
    pixels = torch.rand(1, 3, backbone.native_size, backbone.native_size, generator=torch.Generator().manual_seed(1))
    inversion = invert_image(backbone, pixels, source_prompt="a cat", steps=10, cfg_source=3.5, seed=0)
    ours = edit(backbone, pixels, "a dog", source_prompt="a cat", inversion=inversion,
                config=EditConfig(steps=10, skip=3, cfg_source=3.5, cfg_target=7.5, date=None)).latents
    with edit_friendly_pipeline(pipe, inversion, 3) as kw:
        theirs = pipe("a dog", guidance_scale=7.5, output_type="latent", **kw).images
    with edit_friendly_pipeline(pipe, inversion, 3) as kw:
        back = pipe("a cat", guidance_scale=3.5, output_type="latent", **kw).images
    return {"family": family, "edit_max_abs_diff": float((theirs - ours).abs().max()),
            "max_abs_latent": float(ours.abs().max()),
            "reconstruction_max_abs_diff": float((back - inversion.x0).abs().max())}


def main() -> int:
    """Measure, print and write the tables."""
    from date_edit.scorers import build_scorer

    scorer = build_scorer("clip:tiny")
    gen = [generation_row(f, scorer) for f in ("sd", "sdxl", "sd3", "flux")]
    eds = [edit_row(f) for f in ("sd", "sdxl")]
    lines = ["# Stock diffusers pipelines against date-edit's own loops (tiny random-weight models, CPU)", "",
             "`python -m benchmarks.studies.callback_parity`. Generation: 6 steps, guidance 4, the same "
             "noise; DATE rho 1 at "
             "steps 0 and 4 through `DateCallback` (SDXL, SD3: tokens and pooled).", "",
             "| model | max abs diff, no DATE | max abs diff, DATE | max abs latent |", "|---|---|---|---|"]
    lines += [f"| tiny {r['family']} | {r['plain_max_abs_diff']:.2g} | {r['date_max_abs_diff']:.2g} | "
              f"{r['max_abs_latent']:.3g} |" for r in gen]
    lines += ["", "Edit-friendly editing inside the stock pipeline (`date_edit.stock_edit`), 10 steps, skip 3, "
              "CFG 3.5 -> 7.5, against `date_edit.edit`; the source prompt's round trip against the inverted latent:",
              "", "| model | edit max abs diff | max abs latent | round trip max abs diff |", "|---|---|---|---|"]
    lines += [f"| tiny {r['family']} | {r['edit_max_abs_diff']:.2g} | {r['max_abs_latent']:.3g} | "
              f"{r['reconstruction_max_abs_diff']:.2g} |" for r in eds]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "callback_parity.json").write_text(json.dumps({"generation": gen, "edit": eds}, indent=1) + "\n")
    (RESULTS / "callback_parity.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
