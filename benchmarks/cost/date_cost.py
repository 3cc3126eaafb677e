"""Cost of DATE against plain sampling: time per image and peak GPU memory, measured in the same run.

    python -m benchmarks.cost.date_cost                 # real-size SD 1.5 architecture, random weights, on CUDA
    python -m benchmarks.cost.date_cost --arch sdxl --dtypes fp16,bf16 --batches 1 --fractions 10   # SDXL, 1024 px
    python -m benchmarks.cost.date_cost --arch flux --dtypes bf16 --batches 1 --fractions 10 --block-checkpointing
    python -m benchmarks.cost.date_cost --tiny          # CPU smoke version (tiny random models), used by the tests

Every ratio compares two numbers measured in this process on this device. Times are the median of
``--repeats`` synchronised runs after ``--warmup`` runs; memory is ``torch.cuda.max_memory_allocated``
(CPU: the process's peak RSS, which only grows, so CPU memory ratios are not meaningful).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path


import torch

from date_edit.date import DateConfig
from date_edit.pipeline import GenerateConfig, generate, peak_memory_mb


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device: torch.device, warmup: int, repeats: int) -> tuple[float, float, list[float]]:
    """Median seconds and peak memory (MiB) of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_memory_mb(device), times


def build(args, dtype: str, device: torch.device):
    """The backbone and the objectives for one precision."""
    from date_edit import backbones as bb
    from date_edit.backbones import backbone_from_components, load_backbone
    from date_edit.scorers import build_scorer

    if args.tiny:
        tiny = {"sd15": "tiny", "sdxl": "tiny-sdxl", "sd3": "tiny-sd3", "flux": "tiny-flux"}[args.arch]
        backbone = load_backbone(tiny, dtype=dtype, device=str(device))
        clip = build_scorer("clip:tiny", device=device)
        objectives = {"clip": clip}
        if args.imagereward:
            objectives["clip+imagereward"] = build_scorer("clip:tiny=1,imagereward:tiny=1", device=device)
        return backbone, objectives
    from date_edit.backbones import DTYPES
    from date_edit.scorers.clip import clip_vit_l14_random

    factory = {"sd15": bb.sd15_components, "sdxl": bb.sdxl_components, "sd3": bb.sd3_components,
               "flux": bb.flux_components}[args.arch]
    comps = factory(device=device, dtype=DTYPES[dtype])
    backbone = backbone_from_components(f"{args.arch}-architecture-random", comps, dtype=dtype, device=str(device),
                                        random_weights=True)
    clip = clip_vit_l14_random(device=device)
    clip.model.to(DTYPES[dtype])
    objectives = {"clip": clip}
    if args.imagereward:
        from date_edit.scorers.registry import WeightedScorer, available_scorers

        ir = available_scorers()["imagereward"].factory("random-full", device=device, dtype=DTYPES[dtype])
        objectives["clip+imagereward"] = WeightedScorer([(clip, 1.0), (ir, 1.0)], name="clip+imagereward")
    return backbone, objectives


def update_breakdown(backbone, scorer, repeats: int = 5) -> dict:
    """Median milliseconds of each phase of one DATE update at batch 1 (synchronised between phases)."""
    from date_edit.conditioning import cat_conditions

    device = backbone.device
    size = backbone.native_size // backbone.vae_scale_factor
    x_t = torch.randn((1, backbone.latent_channels, size, size), generator=torch.Generator().manual_seed(0)).to(device)
    cond, uncond, scale = backbone.guidance(backbone.encode_condition(["a photograph of an astronaut riding a horse"]),
                                            backbone.unconditional(1), 7.5)
    t = 501 if backbone.schedule.prediction_type != "flow" else 501.0  # sigma 0.501 on a flow path
    phases: dict[str, list[float]] = {}

    def tick(name: str, start: float) -> float:
        _sync(device)
        now = time.perf_counter()
        phases.setdefault(name, []).append(1000 * (now - start))
        return now

    for i in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        eps_u = None
        if uncond is not None:  # FLUX guides without an unconditional branch
            with torch.no_grad():
                eps_u = backbone(x_t, t, uncond)
            start = tick("unet_uncond_fwd", start)
        leaf = cond["tokens"].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            eps_c = backbone(x_t, t, cond.replace(tokens=leaf))
            eps = eps_c if eps_u is None else eps_u + scale * (eps_c - eps_u)
            start = tick("unet_cond_fwd_grad", start)
            image = backbone.decode(backbone.schedule.x0(x_t, eps, t))
            start = tick("vae_decode_fwd_grad", start)
            h = scorer(image, ["a photograph of an astronaut riding a horse"])
            start = tick("scorer_fwd", start)
            torch.autograd.grad(h.sum(), leaf)
            start = tick("backward", start)
        with torch.no_grad():
            if uncond is None:
                backbone(x_t, t, cond)
            else:
                backbone(torch.cat([x_t, x_t]), t, cat_conditions(uncond, cond))
        tick("plain_cfg_step_unet", start)
        if i == 0:
            phases.clear()
    return {k: statistics.median(v) for k, v in phases.items()}


def edit_run(backbone, scorer, fraction, tiny: bool):
    """A closure editing one random image (inversion + resampling from skip 36 of 100), with DATE or not."""
    from date_edit.pipeline import EditConfig, edit

    size = backbone.native_size
    pixels = torch.rand((1, 3, size, size), generator=torch.Generator().manual_seed(0)).to(backbone.device)
    steps = 10 if tiny else 100
    date = None if fraction is None else DateConfig(rho=0.5, update_steps=f"{fraction}%")
    config = EditConfig(steps=steps, skip="36%", date=date)

    def run():
        return edit(backbone, pixels, "a cat wearing a hat", config=config, scorer=scorer if date else None)

    return run


def diffusers_baseline(backbone, prompt: str, steps: int, guidance: float, batch: int, seed: int):
    """A closure running diffusers' own pipeline of the backbone's family (StableDiffusion, -XL, -3 or Flux) on the
    same modules."""
    import diffusers

    from date_edit.backbones.loading import COMPONENT_NAMES, PIPELINE_CLASSES

    flow = backbone.family in ("sd3", "flux")
    scheduler = (diffusers.FlowMatchEulerDiscreteScheduler if flow else diffusers.DDIMScheduler).from_config(
        backbone.scheduler_config)
    parts = {k: (backbone.unet if k == "transformer" else scheduler if k == "scheduler" else getattr(backbone, k))
             for k in COMPONENT_NAMES[backbone.family]}
    extra = {"sd": dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False),
             "sd3": dict(image_encoder=None, feature_extractor=None),
             "flux": dict(image_encoder=None, feature_extractor=None)}.get(backbone.family, {})
    pipe = getattr(diffusers, PIPELINE_CLASSES[backbone.family])(**parts, **extra)
    pipe.set_progress_bar_config(disable=True)
    size = backbone.native_size

    def run():
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            pipe([prompt] * batch, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                 generator=gen, output_type="pt")

    return run


def main(argv=None) -> int:
    """Run the grid and write JSON + Markdown."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU smoke run with the tiny random models")
    p.add_argument("--arch", choices=("sd15", "sdxl", "sd3", "flux"), default="sd15",
                   help="the architecture, random weights: SD 1.5 (512 px), SDXL base, SD3-medium or FLUX.1-dev "
                        "(1024 px)")
    p.add_argument("--block-checkpointing", action="store_true",
                   help="also DATE 10%% with per-block gradient checkpointing of the UNet/transformer (batch 1)")
    p.add_argument("--dtypes", default=None, help="comma list of fp32,fp16,bf16 (default fp16,fp32,bf16; tiny fp32)")
    p.add_argument("--batches", default=None, help="comma list (default 1,4,8; tiny 1,2)")
    p.add_argument("--fractions", default="10,20,100", help="DATE update fractions in percent")
    p.add_argument("--large-batch-fractions", default="10", help="fractions run at batch > 1")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default 50; tiny 10)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs (default 3; tiny 1)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--imagereward", action="store_true", help="also the CLIP + ImageReward objective")
    p.add_argument("--checkpointing", action="store_true", help="also DATE with VAE gradient checkpointing")
    p.add_argument("--ckpt-default", action="store_true",
                   help="every DATE cell with VAE checkpointing (the CUDA default), plus one clip 10%% cell without")
    p.add_argument("--breakdown", action="store_true", help="also time the phases of one DATE update (batch 1)")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="also plain vs DATE 10%% with torch.backends.cudnn.benchmark on (batch 1)")
    p.add_argument("--taesd", action="store_true",
                   help="also DATE 10%% with the opt-in approximate grad decoder (TAESD architecture, batch 1)")
    p.add_argument("--edit", action="store_true",
                   help="also a 512x512 edit at batch 1 (inversion + 100 steps, skip 36), plain vs DATE 10%%")
    p.add_argument("--compile", action="store_true",
                   help="also plain and DATE 10%% with the UNet under torch.compile (reduce-overhead on CUDA), "
                        "with the one-off compile seconds and the images needed to earn them back")
    p.add_argument("--no-diffusers", action="store_true", help="skip diffusers' StableDiffusionPipeline baseline")
    p.add_argument("--budget-s", type=float, default=1e9, help="stop starting new cells after this many seconds")
    p.add_argument("--out", default=None, help="folder for cost-<card>.json/.md (default benchmarks/results; "
                                               "tiny: print only unless given)")
    args = p.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtypes = (args.dtypes or ("fp32" if args.tiny else "fp16,fp32,bf16")).split(",")
    batches = [int(b) for b in (args.batches or ("1,2" if args.tiny else "1,4,8")).split(",")]
    fractions = [int(f) for f in args.fractions.split(",") if f]
    big_fractions = {int(f) for f in args.large_batch_fractions.split(",") if f}
    steps = args.steps or (10 if args.tiny else 50)
    repeats = args.repeats or (1 if args.tiny else 3)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{platform.machine()}"
    prompt = "a photograph of an astronaut riding a horse"
    started = time.perf_counter()
    rows: list[dict] = []
    out_dir = Path(args.out) if args.out else (None if args.tiny else Path(__file__).resolve().parents[1] / "results")
    slug = card.lower().replace(" ", "-") + ("" if args.arch == "sd15" else f"-{args.arch}")

    def flush() -> None:
        if out_dir is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"card": card, "torch": torch.__version__, "steps": steps, "repeats": repeats, "warmup": args.warmup,
                "arch": args.arch, "resolution": "tiny native (64)" if args.tiny else
                {"sd15": 512}.get(args.arch, 1024), "weights": "random",
                "command": "python -m benchmarks.cost.date_cost "
                           + " ".join(argv if argv is not None else sys.argv[1:])}
        try:
            import diffusers

            meta["diffusers"] = diffusers.__version__
        except ImportError:
            pass
        (out_dir / f"cost-{slug}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (out_dir / f"cost-{slug}.md").write_text(markdown(meta, rows))

    for dtype in dtypes:
        if time.perf_counter() - started > args.budget_s:
            break
        try:
            backbone, objectives = build(args, dtype, device)
        except Exception as exc:  # bf16 on an old card, say
            rows.append({"dtype": dtype, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        if args.breakdown:
            for ckpt in (False, True):
                backbone.enable_gradient_checkpointing(vae=ckpt, unet=False)
                row = {"dtype": dtype, "batch": 1, "method": "update-breakdown", "vae_checkpointing": ckpt,
                       "phases_ms": update_breakdown(backbone, objectives["clip"], repeats=3 if args.tiny else 5)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        for batch in batches:
            cells = [("plain", None, None, False)]
            if not args.no_diffusers and batch in (1,) and dtype != "bf16":
                cells.append(("diffusers", None, None, False))
            if args.block_checkpointing and batch == 1:
                cells.append(("date-blockckpt", 10, "clip", args.ckpt_default))
            if args.taesd and batch == 1:
                cells.append(("date-taesd", 10, "clip", args.ckpt_default))
            if args.cudnn_benchmark and batch == 1:
                cells += [("plain-cudnn", None, None, False), ("date-cudnn", 10, "clip", True)]
            if args.compile:
                cells += [("plain-compiled", None, None, False), ("date-compiled", 10, "clip", args.ckpt_default)]
            if args.edit and batch == 1:
                cells += [("edit", None, None, False), ("edit", 10, "clip", False)]
            for frac in fractions:
                if batch > 1 and frac not in big_fractions:
                    continue
                for obj in objectives:
                    if batch == 1 or obj == "clip":
                        cells.append(("date", frac, obj, args.ckpt_default))
                if (args.checkpointing or args.ckpt_default) and frac == 10 and batch == 1:
                    cells.append(("date", frac, "clip", not args.ckpt_default))
            baselines: dict[str, tuple[float, float]] = {}
            for kind, frac, obj, ckpt in cells:
                if time.perf_counter() - started > args.budget_s:
                    break
                backbone.enable_gradient_checkpointing(vae=ckpt, unet=kind == "date-blockckpt")
                torch.backends.cudnn.benchmark = kind.endswith("-cudnn")
                backbone.set_grad_decoder(("tiny" if args.tiny else "random-full") if kind == "date-taesd" else None)
                compiled = kind.endswith("-compiled")
                if compiled != (backbone.compiled_unet is not None):
                    backbone.compile("auto" if compiled else None)
                compile_before = backbone.compile_s
                if kind == "diffusers":
                    fn = diffusers_baseline(backbone, prompt, steps, 7.5, batch, 6)
                elif kind == "edit":
                    fn = edit_run(backbone, objectives["clip"], frac, tiny=args.tiny)
                else:
                    date = None if frac is None else DateConfig(rho=0.5, update_steps=f"{frac}%")
                    cfg = GenerateConfig(steps=steps, guidance_scale=7.5, seed=6, date=date)
                    scorer = objectives[obj] if obj else None

                    def fn(cfg=cfg, scorer=scorer, backbone=backbone, batch=batch):
                        return generate(backbone, prompt, config=cfg, scorer=scorer, num_images=batch)

                try:
                    sec, mb, times = measure(fn, device, args.warmup, repeats)
                except torch.cuda.OutOfMemoryError:
                    rows.append({"dtype": dtype, "batch": batch, "method": kind, "fraction": frac, "objective": obj,
                                 "vae_checkpointing": ckpt, "error": "out of memory"})
                    torch.cuda.empty_cache()
                    continue
                row = {"dtype": dtype, "batch": batch, "method": kind, "fraction": frac, "objective": obj,
                       "vae_checkpointing": ckpt, "seconds_per_image": sec / batch, "seconds_per_run": sec,
                       "ms_per_step": None if kind == "edit" else 1000 * sec / steps, "peak_memory_mb": mb,
                       "runs_s": times}
                if compiled:
                    row["compile_mode"] = backbone.compile_mode
                    row["compile_s"] = backbone.compile_s - compile_before  # first calls per shape, in the warm-up
                base_key = {"edit": "edit", "plain-cudnn": "cudnn", "date-cudnn": "cudnn",
                            "plain-compiled": "compiled", "date-compiled": "compiled"}.get(kind, "generate")
                if frac is None and kind != "diffusers":
                    baselines[base_key] = (sec, mb)
                if base_key in baselines:
                    base_s, base_mb = baselines[base_key]
                    row["time_ratio_vs_plain"] = sec / base_s
                    row["memory_ratio_vs_plain"] = mb / base_mb if device.type == "cuda" else None
                if kind == "plain-compiled" and "generate" in baselines:  # images that pay back the compilation
                    saved = baselines["generate"][0] / batch - sec / batch
                    row["break_even_images"] = row["compile_s"] / saved if saved > 0 else None
                rows.append(row)
                print(json.dumps(row), flush=True)
                flush()
        del backbone, objectives
        if device.type == "cuda":
            torch.cuda.empty_cache()
    flush()
    print(markdown({"card": card, "steps": steps}, rows))
    return 0


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(meta: dict, rows: list[dict]) -> str:
    """A Markdown table of the rows."""
    lines = [f"# DATE cost on {meta['card']} ({meta.get('steps')} steps, random weights)", "",
             "ms/step is per CFG step of a generation (an edit runs a 100-step inversion plus 64 steps: none given).",
             "",
             "| dtype | batch | method | updates | objective | VAE ckpt | s/image | ms/step | peak MiB "
             "| time / plain | memory / plain |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    breakdowns = [r for r in rows if r.get("method") == "update-breakdown"]
    rows = [r for r in rows if r.get("method") != "update-breakdown"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r.get('dtype')} | {r.get('batch', '')} | {r.get('method', '')} | "
                         f"{r.get('fraction', '')} | {r.get('objective', '')} | | error: {r['error']} | | | | |")
            continue
        frac = f"{r['fraction']}%" if r["fraction"] is not None else "-"
        tr = f"{r['time_ratio_vs_plain']:.3f}" if r.get("time_ratio_vs_plain") else "-"
        mr = f"{r['memory_ratio_vs_plain']:.3f}" if r.get("memory_ratio_vs_plain") else "-"
        lines.append(f"| {r['dtype']} | {r['batch']} | {r['method']} | {frac} | {r['objective'] or '-'} | "
                     f"{'yes' if r['vae_checkpointing'] else 'no'} | {r['seconds_per_image']:.3f} | "
                     f"{_fmt(r['ms_per_step'])} | {r['peak_memory_mb']:.0f} | {tr} | {mr} |")
    for r in rows:
        if r.get("compile_s") is not None:
            even = r.get("break_even_images")
            lines.append(f"\n{r['method']} ({r['dtype']}, batch {r['batch']}, mode {r['compile_mode']}): one-off "
                         f"compile {r['compile_s']:.1f} s"
                         + (f", earned back after {even:.0f} images" if even else ""))
    for r in breakdowns:
        phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phases_ms"].items())
        lines += ["", f"One DATE update at batch 1, {r['dtype']}, VAE checkpointing {r['vae_checkpointing']}: "
                      f"median ms per phase: {phases}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
