"""``date-edit ane``: the Attend-and-Excite multi-concept prompt set with its metrics."""

from __future__ import annotations

import json
import sys

import click

from date_edit.choices import ANE_CATEGORIES, DTYPE_NAMES, RANDOM_MODELS

from . import common, request
from .options import date_options, device_option, seed_option
from .running import EXIT_USAGE, CliError, progress, run_command, say


@click.command()
@click.option("--category", type=click.Choice([*ANE_CATEGORIES, "all"]), default="all",
              show_default=True, help="AnE prompt category (276 prompts in all).")
@click.option("--seeds", type=int, default=64, show_default=True, help="Seeds per prompt (A&E used 64).")
@seed_option("First seed; seeds are seed..seed+N-1.", default=0, show_default=True)
@click.option("--limit", type=int, default=None, help="At most this many prompts per category.")
@click.option("--steps", type=int, default=50, show_default=True, help="DDIM steps.")
@click.option("--cfg-target", "--guidance-scale", "cfg_target", type=float, default=7.5, show_default=True,
              help="CFG scale.")
@click.option("--metric-clip", default="clip:openai/clip-vit-base-patch16", show_default=True,
              help="CLIP of the metrics (A&E: ViT-B/16); with --model tiny/toy their own CLIP.")
@click.option("--captioner", default=None, metavar="NAME",
              help="Captioner of the text-text similarity (the captioners of --source-prompt auto): blip "
                   "(Salesforce/blip-image-captioning-large), blip:large, blip:base, blip:tiny (random weights, "
                   "tests), blip:HUB_ID_OR_FOLDER, toy (the toy world's, with its own CLIP), a plugin's name "
                   "(entry points date_edit.captioners), or none (no text-text similarity)  [default: the model's: "
                   "toy for --model toy, blip:tiny for the tiny models, blip otherwise].")
@date_options
@click.option("--model", "-m", default="CompVis/stable-diffusion-v1-4", show_default=True,
              help="Backbone (A&E used SD 1.4); tiny/toy for offline runs.")
@click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="fp32", show_default=True,
              help="Model precision.")
@device_option()
@click.option("--out", "-o", type=click.Path(), default="outputs/ane", show_default=True,
              help="Folder for images, records.jsonl and metrics.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def ane(**opts) -> None:
    """Generate the AnE prompts (fixed embedding or DATE) and report CLIP full-prompt, min-object and
    text-text similarities (mean and 95% CI per category and overall)."""

    def body():
        from pathlib import Path

        from date_edit.backbones import load_backbone
        from date_edit.limits import MAX_SEED
        from date_edit.multiconcept import TemplateTextEncoder, load_ane_prompts, load_captioner, run_ane
        from date_edit.pipeline import GenerateConfig
        from date_edit.scorers import build_scorer

        if opts["seeds"] < 1:
            raise CliError("--seeds must be >= 1", EXIT_USAGE)
        if opts["seed"] + opts["seeds"] - 1 > MAX_SEED:
            raise CliError(f"--seed {opts['seed']} with --seeds {opts['seeds']} runs past the last seed, {MAX_SEED}; "
                           "choose a smaller --seed", EXIT_USAGE)
        date = request.date_config(opts)
        config = GenerateConfig(steps=opts["steps"], guidance_scale=opts["cfg_target"], seed=opts["seed"], date=date)
        model = opts["model"]
        prompts = _prompts(model, opts["category"], load_ane_prompts)
        if opts["limit"] is not None:
            prompts = {k: v[: opts["limit"]] for k, v in prompts.items()}
        from date_edit.hub import library_progress_bars

        with library_progress_bars(sys.stderr.isatty() and not opts["quiet"]):
            backbone = load_backbone(model, dtype=opts["dtype"], device=opts["device"])
        if backbone.random_weights:
            say(f"note: --model {backbone.name} has random weights; its images are noise (for tests and smoke runs)")
        scorer = None
        if date is not None:
            scorer = build_scorer(common.scorer_spec(opts["scorer"], model), device=backbone.device,
                                  require_differentiable=True)
        metric_spec = "clip:tiny" if model in RANDOM_MODELS else "clip:toy" if model == "toy" else opts["metric_clip"]
        encoder = TemplateTextEncoder(build_scorer(metric_spec, device=backbone.device))
        from date_edit.captioning import AVOID, default_captioner
        from date_edit.errors import CaptionerError

        cap_spec = opts["captioner"] or default_captioner(model, backbone.family)
        try:
            captioner = load_captioner(cap_spec, device=backbone.device)
        except CaptionerError as exc:  # a weights error (exit 1), with this command's own way round it
            raise CaptionerError(str(exc).replace(AVOID, "--captioner none skips the text-text similarity")) \
                from None
        judge = _toy_judge() if model == "toy" else None
        seeds = list(range(opts["seed"], opts["seed"] + opts["seeds"]))
        out = Path(opts["out"])
        summary = run_ane(backbone, prompts, seeds, config=config, scorer=scorer, encoder=encoder,
                          captioner=captioner, out_dir=out, judge=judge, progress=progress(opts["quiet"]))
        report = {"command": "ane", "model": model, "category": opts["category"], "seeds": seeds,
                  "prompts": sum(len(v) for v in prompts.values()), "method": "fixed" if date is None else "date",
                  "date": date.to_dict() if date else None, "scorer": scorer.name if scorer else None,
                  "metric_clip": metric_spec, "captioner": captioner.name if captioner else None,
                  "metrics": summary, "records": str(out / "records.jsonl")}
        (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        if opts["as_json"]:
            click.echo(json.dumps(report))
        else:
            for group, metrics in summary.items():
                parts = [f"{m} {v['mean']:.4f}" + (f" ± {v['ci95']:.4f}" if v["ci95"] else "")
                         for m, v in metrics.items() if v["mean"] is not None and m != "seconds"]
                click.echo(f"{group}: " + ", ".join(parts), err=True)
            say(f"wrote {out / 'metrics.json'}")

    run_command(body)


def _prompts(model: str, category: str, load_ane_prompts) -> dict:
    """AnE prompts, or the toy world's two-object prompts with --model toy."""
    if model == "toy":
        from date_edit.toy.world import two_object_prompts

        return {"toy_two_objects": two_object_prompts()}
    return load_ane_prompts(category)


def _toy_judge():
    from date_edit.toy.judge import evaluate

    return evaluate


if __name__ == "__main__":  # pragma: no cover
    sys.exit(ane())
