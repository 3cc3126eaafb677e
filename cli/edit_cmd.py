"""``date-edit edit``, ``generate`` and ``reconstruct``: one image (or one batch of images) per call.

Thin: parse options, build configs, call one library function, write files. Heavy imports (torch, diffusers)
happen inside the command bodies, so ``--help`` answers at once.
"""

from __future__ import annotations

import click

from . import common, request
from .options import checked, control_options, date_options, edit_options, image_options, model_options
from .running import EXIT_USAGE, CliError, progress, run_command, say


@click.command()
@click.argument("image", type=click.Path(dir_okay=True))
@click.argument("prompt")
@edit_options
@control_options
@date_options
@image_options
@model_options()
def edit(image: str, prompt: str, **opts) -> None:
    """Edit IMAGE towards PROMPT: invert it (edit-friendly DDPM) and resample, or FlowEdit it (SD3, FLUX), with
    DATE steering the target embedding."""

    def body():
        # the one request; --out is checked with it (no torch yet, so an unwritable one is answered at once)
        req = request.edit_request(image, prompt, opts, output="")
        request.precheck(req)
        backbone = req.model.load()
        loaded = common.prepare_image(image, backbone, req.size, req.resize)
        req = request.resolve_source(req, loaded, backbone)
        scorer = request.build_scorer(req, backbone, req.config.date is not None)
        result, _ = request.run(req, backbone, scorer, loaded, progress=progress(opts["quiet"]))
        request.write(req, result, request.edit_record(req, result, backbone, scorer, loaded))

    run_command(body)


@click.command()
@click.argument("prompt")
@click.option("--steps", type=int, default=50, show_default=True, help="DDIM steps (eta 0).")
@click.option("--cfg-target", "--guidance-scale", "cfg_target", type=float, default=7.5, show_default=True,
              help="CFG scale.")
@click.option("--height", type=int, default=None, callback=checked("check_side"),
              help="Image height (default: the model's native size; at least 64).")
@click.option("--width", type=int, default=None, callback=checked("check_side"),
              help="Image width (default: the model's native size; at least 64).")
@click.option("--num-images", "-n", type=int, default=1, show_default=True, help="Images in one batch.")
@date_options
@model_options()
def generate(prompt: str, **opts) -> None:
    """Generate an image of PROMPT with DDIM, DATE steering the text embedding (the paper's setting)."""

    def body():
        from date_edit.imaging import default_output_name

        seed = 6 if opts["seed"] is None else opts["seed"]
        if opts["num_images"] < 1:
            raise CliError("--num-images must be >= 1", EXIT_USAGE)
        inputs = request.input_files(None, None, (opts["scorer"],))  # weights files --scorer names
        path = common.output_path(opts["out"], default_output_name(None, prompt, seed), opts["overwrite"], inputs,
                                  count=opts["num_images"])
        from date_edit.pipeline import GenerateConfig, generate as run_generate

        config = GenerateConfig(steps=opts["steps"], guidance_scale=opts["cfg_target"], seed=seed,
                                height=opts["height"], width=opts["width"], date=request.date_config(opts))
        common.check_schedule(config.date, config.steps)
        model = request.ModelChoice.from_options(opts)
        backbone = model.load()
        spec = common.scorer_spec(opts["scorer"], opts["model"])
        scorer = request.build_scorer(None, backbone, config.date is not None, spec=spec, quiet=model.quiet)
        result = run_generate(backbone, prompt, config=config, scorer=scorer, num_images=opts["num_images"],
                              progress=progress(opts["quiet"]))
        scores = common.score_images(scorer, result.images, result.prompts)
        extra = {"guidance_scale": config.guidance_scale}
        record = common.record("generate", result, backbone, scorer=spec,
                               update_mode=None if opts["no_date"] else opts["update_mode"], scores=scores,
                               extra=extra)
        common.write_outputs(result, path, record, opts["overwrite"], inputs, opts["as_json"])

    run_command(body)


@click.command()
@click.argument("image", type=click.Path(dir_okay=True))
@click.option("--source-prompt", default="", help="Prompt describing the input image (default empty).")
@click.option("--steps", type=int, default=100, show_default=True, help="DDPM steps.")
@click.option("--skip", default="36%", show_default=True, help="Steps skipped: a count or a percentage of --steps.")
@click.option("--cfg-source", type=float, default=3.5, show_default=True, help="CFG scale (inversion and resampling).")
@image_options
@model_options()
def reconstruct(image: str, **opts) -> None:
    """Invert IMAGE and resample it with the source prompt: reports how exact the inversion is."""

    def body():
        from date_edit.imaging import default_output_name

        seed = 0 if opts["seed"] is None else opts["seed"]
        path = common.output_path(opts["out"], default_output_name(image, "reconstruct", seed), opts["overwrite"],
                                  [image], photo=image)
        from date_edit.pipeline import EditConfig, reconstruct as run_reconstruct

        config = EditConfig(steps=opts["steps"], skip=opts["skip"], cfg_source=opts["cfg_source"],
                            cfg_target=opts["cfg_source"], seed=seed, date=None)
        common.precheck_image(image)
        backbone = request.ModelChoice.from_options(opts).load()
        loaded = common.prepare_image(image, backbone, opts["size"], opts["resize"])
        result = run_reconstruct(backbone, loaded.pixels, source_prompt=opts["source_prompt"], config=config,
                                 progress=progress(opts["quiet"]))
        extra = {"input": image, "source_prompt": opts["source_prompt"],
                 "processed_size": list(loaded.processed_size), **_reconstruction_errors(result, backbone, loaded)}
        record = common.record("reconstruct", result, backbone, scorer=None, update_mode=None, scores={},
                               extra=extra)
        common.write_outputs(result, path, record, opts["overwrite"], [image], opts["as_json"])
        if not opts["as_json"]:
            say(f"latent max abs error {extra['latent_max_abs_error']:.3g}, PSNR vs the VAE round trip "
                f"{extra['image_psnr_db']:.2f} dB, vs the input {extra['input_psnr_db']:.2f} dB")

    run_command(body)


def _reconstruction_errors(result, backbone, loaded) -> dict:
    """How far the reconstruction is from the inverted latents, the VAE round trip and the input."""
    import torch

    from date_edit.metrics import psnr_db

    err = float((result.latents - result.source_latents).abs().max())
    with torch.no_grad():
        vae_images = backbone.decode(result.source_latents.to(backbone.device)).cpu()
    return {"latent_max_abs_error": err, "image_psnr_db": psnr_db(result.images, vae_images),
            "input_psnr_db": psnr_db(result.images, loaded.pixels)}
