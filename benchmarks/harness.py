"""The benchmark harness: suites x methods x seeds -> per-image JSONL, tables, plots and an HTML page.

    python -m benchmarks run --suite toy --methods fixed,date-clip,date-random --limit 20
    python -m benchmarks run --suite coco5k --model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --methods fixed,date-clip,date-ir,ug --limit 5000 --dtype fp16

Runs are resumable (a rerun skips every (method, item, seed) already in records.jsonl) and seeded.
A method may carry overrides after ``@``: ``date-clip@rho=1.0``, ``date-clip@updates=20%``;
``--sweep rho=0.25,0.5,1`` adds those variants of every DATE method.

On many GPUs or nodes start it with torchrun (``torchrun --standalone --nproc-per-node 8 -m benchmarks run ...``),
``accelerate launch`` or srun (with MASTER_ADDR/MASTER_PORT exported); the ranks wait DATE_EDIT_JOIN_TIMEOUT
seconds (900) for each other to start.
"""

from __future__ import annotations

import csv
import html
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from benchmarks.checks import (MAX_STEPS_FACTOR, check_arguments, check_item_id, method_slug, number,
                               print_error)
from benchmarks.pie import excerpt
from date_edit.choices import DEFAULT_MODEL, OFFLINE_MODELS
from date_edit.date import DateConfig
from date_edit.distributed import JobProgress
from date_edit.errors import ConfigError, DateEditError
from date_edit.limits import MAX_N_AVG
from date_edit.metrics import psnr_db as psnr
from date_edit.scorers import offline_scorer_spec
from date_edit.stats import mean_ci95

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
SUITES = ("toy", "ane", "coco5k", "edit", "pie")
EDIT_SUITES = ("edit", "pie")
# per-method options of the edit suites (``fixed@p2p@mask=bench@preset=pie-ef-p2p``): name -> allowed values
EDIT_OPTIONS = {"p2p": ("on", "off"), "blend": ("on", "off"), "mask": ("none", "auto", "bench"), "preset": None,
                "editor": ("auto", "ddpm", "flowedit")}

# name -> (DATE settings or None, objective scorer or None, universal guidance strength)
BASE_METHODS: dict[str, tuple[Optional[dict], Optional[str], float]] = {
    "fixed": (None, None, 0.0),
    "fixed-equal-compute": (None, None, 0.0),
    "date-clip": ({}, "clip", 0.0),
    "date-ir": ({}, "imagereward", 0.0),
    "date-clip-ir": ({}, "clip=1,imagereward=1", 0.0),
    "date-min-concept": ({}, "min-concept", 0.0),
    "date-random": ({"direction": "random"}, "clip", 0.0),
    "date-noisy": ({"objective": "xt"}, "clip", 0.0),
    "date-unnormalized": ({"normalize": False}, "clip", 0.0),
    "ug": (None, "clip", 1.0),
}


@dataclass(frozen=True)
class Method:
    """A resolved method: its label, DATE config, objective spec and Universal Guidance strength."""

    label: str
    base: str
    date: Optional[DateConfig]
    scorer: Optional[str]
    ug: float
    steps_factor: float = 1.0  # fixed-equal-compute: more steps, set from a measured DATE/plain ratio
    edit: tuple[tuple[str, str], ...] = ()  # edit suites: (option, value) pairs from EDIT_OPTIONS

    def option(self, name: str) -> Optional[str]:
        """The value of an edit option this method sets (``@p2p`` -> ``on``), or None."""
        return dict(self.edit).get(name)


def parse_method(text: str, default_updates: str = "10%") -> Method:
    """``date-clip@rho=1.0@updates=20%`` -> Method (unknown names and keys are one-line errors)."""
    base, *overrides = text.strip().split("@")
    if base not in BASE_METHODS:
        raise ConfigError(None, f"unknown method {excerpt(base)}: known are {', '.join(BASE_METHODS)}")
    date_kw, scorer, ug = BASE_METHODS[base]
    date_kw = dict(date_kw) if date_kw is not None else None
    factor = 1.0
    edit: dict[str, str] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if key in EDIT_OPTIONS:
            edit[key] = _edit_option(text, key, value)
        elif key == "rho" and date_kw is not None:
            date_kw["rho"] = number(text, key, value)
        elif key == "updates" and date_kw is not None:
            date_kw["update_steps"] = value
        elif key == "mode" and date_kw is not None:
            date_kw["mode"] = value
        elif key == "ug":
            ug = number(text, key, value)
        elif key == "steps-factor":
            factor = number(text, key, value, MAX_STEPS_FACTOR)
        else:
            raise ConfigError(None, f"method {excerpt(text)}: cannot set {excerpt(key)} here")
    date = None
    if date_kw is not None:
        date = DateConfig(**({"update_steps": default_updates} | date_kw))
    return Method(label=text.strip(), base=base, date=date, scorer=scorer, ug=ug, steps_factor=factor,
                  edit=tuple(sorted(edit.items())))


def _edit_option(text: str, key: str, value: str) -> str:
    """One checked ``@key=value`` edit option (``@p2p`` alone means ``on``)."""
    from benchmarks.pie import check_preset

    value = value.strip() or ("on" if key in ("p2p", "blend") else "")
    if key == "preset":
        check_preset(value)
    elif value not in EDIT_OPTIONS[key]:
        raise ConfigError(None, f"method {excerpt(text)}: {key} takes {', '.join(EDIT_OPTIONS[key])}, got "
                                f"{excerpt(value)}")
    return value


def expand_sweep(methods: list[str], sweep: Optional[str]) -> list[str]:
    """Add ``name@key=v`` for each DATE method and each sweep value (``rho=0.25,0.5`` or ``updates=10%,20%``)."""
    if not sweep:
        return methods
    key, _, values = sweep.partition("=")
    out = list(methods)
    for m in methods:
        if BASE_METHODS.get(m.split("@")[0], (None,))[0] is not None:
            out += [f"{m}@{key}={v}" for v in values.split(",") if f"{m}@{key}={v}" not in out]
    return out


# ---------------------------------------------------------------------------------------------- suites


@dataclass
class Item:
    """One benchmark prompt (and for edits, its source image and prompt)."""

    id: str
    prompt: str
    group: str = "all"
    image: Optional[str] = None
    source_prompt: str = ""
    pie: Optional[object] = None  # the PIE-Bench entry (benchmarks.pie.PieEntry) of a pie item


def load_items(suite: str, limit: Optional[int], category: str = "all", data: Optional[str] = None) -> list[Item]:
    """The suite's items, the first ``limit`` of them."""
    if suite == "toy":
        from date_edit.toy.world import two_object_prompts

        items = [Item(id=f"toy{i:03d}", prompt=p, group="two_objects") for i, p in enumerate(two_object_prompts())]
    elif suite == "ane":
        from date_edit.multiconcept import load_ane_prompts

        items = [Item(id=f"{c}{i:03d}", prompt=p, group=c)
                 for c, ps in load_ane_prompts(category).items() for i, p in enumerate(ps)]
    elif suite == "coco5k":
        with open(DATA / "coco2014_val_captions_5k.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        items = [Item(id=f"coco{i:04d}", prompt=r["caption"].strip(), group="coco") for i, r in enumerate(rows)]
    elif suite == "edit":
        spec = json.loads((DATA / "edit_set.json").read_text())
        items = [Item(id=e["id"], prompt=e["target"], group="edit", image=str(ROOT / e["image"]),
                      source_prompt=e["source"]) for e in spec["items"]]
    elif suite == "pie":
        from benchmarks.pie import load_pie, parse_categories

        if not data:
            raise ConfigError("data", "--suite pie needs --data DIR: the PIE-Bench folder with mapping_file.json and "
                                      "annotation_images/ (see docs/benchmarks.md, 'PIE-Bench')")
        items = [Item(id=e.key, prompt=e.target_prompt, group=e.category_name, image=str(e.image),
                      source_prompt=e.source_prompt, pie=e)
                 for e in load_pie(data, parse_categories(category), limit)]
    else:
        raise ConfigError(None, f"unknown suite {suite!r}: use one of {', '.join(SUITES)}")
    return items[:limit] if limit else items


class Metrics:
    """The suite's metric functions, built once: ``(images [1,3,H,W], item, source_pixels) -> dict``."""

    def __init__(self, suite: str, model: str, device, eval_clip: Optional[str], captioner: Optional[str]) -> None:
        from date_edit.scorers import build_scorer

        self.suite = suite
        offline = model in OFFLINE_MODELS
        if suite == "pie":
            from benchmarks.pie_metrics import PieMetrics

            self.pie = PieMetrics("random" if offline else "reference", device=device)
        elif suite == "toy":
            from date_edit.toy.judge import evaluate

            self.judge = evaluate
            self.clip = build_scorer("clip:toy" if model == "toy" else "clip:tiny", device=device)
        elif suite == "ane":
            from date_edit.multiconcept import TemplateTextEncoder, load_captioner

            clip = build_scorer("clip:tiny" if offline else (eval_clip or "clip:openai/clip-vit-base-patch16"),
                                device=device)
            self.encoder = TemplateTextEncoder(clip)
            self.captioner = load_captioner("blip:tiny" if offline else (captioner or "blip"), device=device)
        else:
            default_eval = "clip:openclip/ViT-g-14/laion2b_s12b_b42k" if suite == "coco5k" else "clip"
            self.clip = build_scorer("clip:tiny" if offline else (eval_clip or default_eval), device=device)
            self.imagereward = None
            if suite == "edit":
                from benchmarks.edit_metrics import Lpips

                self.lpips = Lpips("random" if offline else "alex", device=device)
            if suite == "coco5k":
                try:
                    self.imagereward = build_scorer("imagereward:tiny" if offline else "imagereward", device=device)
                except Exception as exc:  # reported, not fatal: CLIP score still runs
                    print(f"note: ImageReward metric unavailable: {str(exc).splitlines()[0]}")

    def __call__(self, images: torch.Tensor, item: Item, source: Optional[torch.Tensor]) -> dict:
        """Metrics of one image."""
        import numpy as np

        from date_edit.imaging import to_pil

        with torch.no_grad():
            if self.suite == "toy":
                verdict = self.judge(np.asarray(to_pil(images)[0]), item.prompt)
                return {"both_correct": float(bool(verdict["correct"])),
                        "clip_toy": float(self.clip(images, [item.prompt])[0])}
            if self.suite == "ane":
                from date_edit.multiconcept import ane_metrics

                m = ane_metrics(images, item.prompt, self.encoder, self.captioner)[0]
                return {"full_prompt": m.full_prompt, "min_object": m.min_object, "text_text": m.text_text}
            clip = float(self.clip(images, [item.prompt])[0])
            if self.suite != "edit":
                out = {"clip": clip}
                if self.imagereward is not None:
                    out["imagereward"] = float(self.imagereward(images, [item.prompt])[0])
                return out
            out = {"clip_to_target": clip}  # with LPIPS to the source: the DDPM-inversion paper's pair
            if source is not None:
                out["lpips_to_source"] = float(self.lpips(images, source)[0])
                out["psnr_to_source"] = psnr(images, source)
                out["ssim_to_source"] = ssim(images, source)
            return out


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004) of ``(B, 3, H, W)`` images in [0, 1], Gaussian window, per channel."""
    c1, c2 = 0.01**2, 0.03**2
    coords = torch.arange(window, dtype=torch.float32) - window // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum())[:, None] * (g / g.sum())[None, :]
    kernel = g.expand(a.shape[1], 1, window, window).to(a)

    def blur(x):
        return torch.nn.functional.conv2d(x, kernel, groups=x.shape[1])

    a, b = a.float(), b.float().to(a.device)
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


# ---------------------------------------------------------------------------------------------- runner


def model_fingerprint(backbone) -> str:
    """A short hash of the UNet's and the VAE's first and last weights: tells two trainings of one model apart."""
    import hashlib

    h = hashlib.sha256()
    for module in (backbone.unet, backbone.vae):
        params = list(module.parameters())
        for p in (params[0], params[-1]):
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_same_model(out: Path, model: str, backbone, resuming: bool) -> None:
    """Resume only with the model that made the records (``run.json`` keeps its fingerprint)."""
    meta_path = out / "run.json"
    fingerprint = model_fingerprint(backbone)
    if resuming and meta_path.is_file():
        earlier = json.loads(meta_path.read_text())
        if earlier.get("fingerprint") != fingerprint:
            raise ConfigError(None, f"{out} holds records of another model ({earlier.get('model')}, weights "
                                    f"{earlier.get('fingerprint')}); delete it or pass --out to start a new run")
    meta_path.write_text(json.dumps({"model": model, "fingerprint": fingerprint}) + "\n")


def run(args) -> Optional[Path]:
    """Run a suite; returns the output folder (None on ranks other than 0, which write no reports).

    Under a launcher (torchrun, accelerate launch, srun) every rank takes its round-robin share of what is left,
    writes its own ``records.rank<N>.jsonl``, and rank 0 merges them into ``records.jsonl`` and writes the reports
    from the union of all ranks' records."""
    from date_edit.distributed import Dist

    dist = Dist.from_env()
    device = dist.device(args.device)
    dist.init(device)
    try:
        return _run(args, dist, device)
    finally:
        dist.close()


def _run(args, dist, device: str) -> Optional[Path]:
    from date_edit.backbones import load_backbone

    methods = [parse_method(m, args.updates) for m in expand_sweep(args.methods.split(","), args.sweep)]
    items = load_items(args.suite, args.limit, args.category, getattr(args, "data", None))
    out = Path(args.out or (Path("benchmarks") / "runs" / args.suite))
    out.mkdir(parents=True, exist_ok=True)
    done = _load_all_records(out)
    dist.barrier()  # every rank has read what is done before any rank writes
    backbone = load_backbone(args.model, dtype=args.dtype, device=device)
    prints = dist.gather(model_fingerprint(backbone))
    if len(set(prints)) > 1:
        raise ConfigError(None, f"the ranks loaded different weights ({', '.join(prints)}): give every node the "
                                "same --model")
    if dist.main:
        _check_same_model(out, args.model, backbone, resuming=bool(done))
    if args.suite in EDIT_SUITES:
        from benchmarks.edit_suite import check_methods

        check_methods(args, methods, backbone, items[0].source_prompt)
    runner = _Runner(args, out, backbone, Metrics(args.suite, args.model, backbone.device, args.eval_clip,
                                                  args.captioner))
    seeds = list(range(args.seed, args.seed + args.seeds))
    started = time.perf_counter()
    log_path = out / (f"records.rank{dist.rank}.jsonl" if dist.active else "records.jsonl")
    plain = [m for m in methods if m.base != "fixed-equal-compute"]
    equal = [m for m in methods if m.base == "fixed-equal-compute"]
    todo, todo_equal = _todo(plain, items, seeds, done), _todo(equal, items, seeds, done)
    progress = JobProgress(dist, len(todo) + len(todo_equal), enabled=not args.quiet and sys.stderr.isatty(),
                           desc=args.suite, key="date-edit/benchmarks")
    try:
        with open(log_path, "a") as log:
            runner.run_all(dist.shard(todo), log, done, None, progress.step)
            progress.wait_all()
            # one-off: DATE's time over fixed, measured on every rank's records, computed once and sent to all
            equal_factor = dist.broadcast(_equal_compute_factor(methods, _load_all_records(out)) if dist.main
                                          else None)
            runner.run_all(dist.shard(todo_equal), log, done, equal_factor, progress.step)
        progress.wait_all()  # every rank's log is closed: rank 0 may merge them
    finally:
        progress.close()
    if not dist.main:
        return None
    records = _merge_records(out, methods, items)
    fid = compute_fid(out, methods, args.fid_ref, backbone.device) if args.fid_ref else {}
    write_reports(out, records, fid=fid, meta={"suite": args.suite, "model": args.model, "seeds": seeds,
                                               "steps": runner.steps, "limit": args.limit, "processes": dist.world,
                                               "wall_s": time.perf_counter() - started,
                                               "device": str(backbone.device),
                                               "equal_compute_factor": equal_factor if equal else None})
    if args.suite == "pie":
        from benchmarks.pie_report import write_pie_table

        write_pie_table(out, records, {"model": args.model}, labels=runner.metrics.pie.labels)
    return out


def _todo(methods: list[Method], items: list[Item], seeds: list[int], done: dict) -> list[tuple]:
    """Every (method, item, seed) not done yet, in one order every rank computes the same way."""
    return [(m, item, seed) for m in methods for item in items for seed in seeds
            if (m.label, item.id, seed) not in done]


class _Runner:
    """Generates (or edits) and measures one (method, item, seed) at a time, with the scorers and source images
    built once."""

    def __init__(self, args, out: Path, backbone, metrics: Metrics) -> None:
        import socket

        self.args, self.out, self.backbone, self.metrics = args, out, backbone, metrics
        self.steps = args.steps or (100 if args.suite in EDIT_SUITES else 50)
        self.scorers: dict[str, object] = {}
        self.sources: dict[str, torch.Tensor] = {}
        self.host = socket.gethostname()

    def run_all(self, todo: list[tuple], log, done: dict, equal_factor: Optional[float],
                on_record: Callable[[], None] = lambda: None) -> None:
        """Run ``todo``, appending one JSON line per image to ``log`` and to ``done``; ``on_record()`` after each."""
        for method, item, seed in todo:
            rec = self.one(method, item, seed, equal_factor)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            done[(method.label, item.id, seed)] = rec
            on_record()

    def _scorer(self, method: Method):
        from date_edit.scorers import build_scorer

        if not method.scorer:
            return None
        spec = offline_scorer_spec(method.scorer, self.args.model)
        if spec not in self.scorers:
            self.scorers[spec] = build_scorer(spec, device=self.backbone.device, require_differentiable=True)
        return self.scorers[spec]

    def one(self, method: Method, item: Item, seed: int, equal_factor: Optional[float]) -> dict:
        """The record of one image: what made it, its metrics, time, memory, host and device."""
        from date_edit.imaging import save_png, to_pil
        from date_edit.pipeline import GenerateConfig, generate

        args, backbone = self.args, self.backbone
        n_steps = self.steps
        if method.base == "fixed-equal-compute":
            n_steps = max(self.steps, round(self.steps * (equal_factor or 1.0) * method.steps_factor))
        if backbone.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(backbone.device)
        source, extra = None, {}
        if args.suite in EDIT_SUITES:
            from benchmarks.edit_suite import edit_item

            equal = n_steps if method.base == "fixed-equal-compute" else None
            result, source, extra = edit_item(self, method, item, seed, steps=equal)
            n_steps = extra.pop("steps")
        else:
            cfg = GenerateConfig(steps=n_steps, seed=seed, date=method.date, universal_guidance=method.ug,
                                 guidance_scale=args.guidance)
            result = generate(backbone, item.prompt, config=cfg, scorer=self._scorer(method))
        folder = self.out / "images" / method_slug(method.label)
        image_path = folder / f"{check_item_id(item.id, self.out)}_s{seed}.png"
        save_png(to_pil(result.images)[0], image_path, overwrite=True)
        rec = {"suite": args.suite, "method": method.label, "base": method.base, "item": item.id,
               "group": item.group, "prompt": item.prompt, "seed": seed, "steps": n_steps,
               "image": str(image_path.relative_to(self.out)), "seconds": result.timings["total_s"],
               "peak_memory_mb": result.peak_memory_mb, "update_steps": result.update_steps,
               "date_scores": list(result.trace.scores) if result.trace else [],
               "rho": method.date.rho if method.date else None,
               "updates": method.date.update_steps if method.date else None,
               "host": self.host, "device": str(backbone.device)}
        rec.update(extra)
        if args.suite == "pie":
            from benchmarks.edit_suite import pie_fields

            rec.update(pie_fields(self, method, item, seed, result))
        else:
            rec.update(self.metrics(result.images, item, source))
        return rec


def _load_all_records(out: Path) -> dict:
    """The records of ``records.jsonl`` and of every rank's ``records.rank<N>.jsonl``, by (method, item, seed)."""
    done = _load_records(out / "records.jsonl")
    for path in sorted(out.glob("records.rank*.jsonl")):
        done.update(_load_records(path))
    return done


def _merge_records(out: Path, methods: list[Method], items: list[Item]) -> list[dict]:
    """All ranks' records into ``records.jsonl`` (written whole, then swapped in), the rank files removed; returns
    the records of this run's methods and items, in method, item, seed order."""
    done = _load_all_records(out)
    tmp = out / "records.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    os.replace(tmp, out / "records.jsonl")
    for path in out.glob("records.rank*.jsonl"):
        path.unlink()
    order = {m.label: i for i, m in enumerate(methods)}
    item_order = {it.id: i for i, it in enumerate(items)}
    return sorted(done.values(), key=lambda r: (order.get(r["method"], len(order)),
                                                item_order.get(r["item"], len(item_order)), r["seed"]))


def compute_fid(out: Path, methods: list[Method], reference: str, device) -> dict[str, Optional[float]]:
    """FID of each method's images against ``reference`` (a folder of images or pytorch-fid ``.npz``
    statistics), with pytorch-fid (InceptionV3 pool3, as the DATE paper). ``None`` with a note if unavailable."""
    try:
        from pytorch_fid.fid_score import calculate_fid_given_paths
    except ImportError:
        print("note: FID skipped: `pip install pytorch-fid` (its InceptionV3 weights download once on first use)")
        return {}
    if not Path(reference).exists():
        raise ConfigError("fid_ref", f"{reference}: no such file or folder")
    result = {}
    for method in methods:
        folder = out / "images" / method_slug(method.label)
        try:
            result[method.label] = float(calculate_fid_given_paths([str(folder), reference], 50, str(device), 2048))
        except Exception as exc:  # weights not downloadable offline, too few images, ...
            print(f"note: FID for {method.label} failed: {str(exc).splitlines()[0][:200]}")
            result[method.label] = None
    return result


def _equal_compute_factor(methods: list[Method], done: dict) -> Optional[float]:
    """DATE(clip)/fixed mean time ratio measured so far in this run folder (for fixed-equal-compute)."""
    fixed = [r["seconds"] for (m, _, _), r in done.items() if m == "fixed"]
    date = [r["seconds"] for (m, _, _), r in done.items() if m == "date-clip"]
    if not fixed or not date:
        return None
    return max(1.0, (sum(date) / len(date)) / (sum(fixed) / len(fixed)))


def _load_records(path: Path) -> dict:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a killed run
                continue
            done[(r["method"], r["item"], r["seed"])] = r
    return done



# --------------------------------------------------------------------------------------------- reports

NON_METRICS = {"suite", "method", "base", "item", "group", "prompt", "seed", "steps", "image", "update_steps",
               "date_scores", "rho", "updates", "host", "device", "controls", "preset", "skip", "cfg_source",
               "cfg_target", "editor", "source_prompt", "reference_image", "category", "image_path", "edited_words",
               "blended_words", "p2p_words"}


def summarize(records: list[dict]) -> dict[str, dict[str, dict]]:
    """Per method: mean and 95% CI of every numeric field (metrics, seconds, peak memory)."""
    by_method: dict[str, list[dict]] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    table = {}
    for method, rs in by_method.items():
        keys = sorted({k for r in rs for k, v in r.items() if k not in NON_METRICS and isinstance(v, (int, float))})
        table[method] = {k: mean_ci95([r.get(k) for r in rs]) for k in keys}
    return table


def write_reports(out: Path, records: list[dict], meta: dict, fid: Optional[dict] = None) -> None:
    """summary.md / summary.csv / summary.json, plots/*.png and index.html."""
    table = summarize(records)
    for method, value in (fid or {}).items():
        if method in table and value is not None:
            table[method]["fid"] = {"mean": value, "ci95": None, "n": 1}
    (out / "summary.json").write_text(json.dumps({"meta": meta, "methods": table}, indent=2) + "\n")
    metrics = sorted({k for row in table.values() for k in row})
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "n"] + [x for m in metrics for x in (m, f"{m}_ci95")])
        for method, row in table.items():
            n = max((v["n"] for v in row.values()), default=0)
            w.writerow([method, n] + [x for m in metrics for x in (row.get(m, {}).get("mean"),
                                                                     row.get(m, {}).get("ci95"))])
    lines = [f"# {meta['suite']} suite: {meta['model']}, seeds {meta['seeds'][0]}..{meta['seeds'][-1]}, "
             f"{meta['steps']} steps", "", "Mean ± 95% CI (normal approximation) over items x seeds.", "",
             "| method | n | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for method, row in table.items():
        n = max((v["n"] for v in row.values()), default=0)
        cells = []
        for m in metrics:
            v = row.get(m)
            if not v or v["mean"] is None:
                cells.append("-")
            else:
                cells.append(f"{v['mean']:.4g}" + (f" ± {v['ci95']:.2g}" if v["ci95"] is not None else ""))
        lines.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
    if meta.get("equal_compute_factor"):
        lines += ["", f"fixed-equal-compute used {meta['equal_compute_factor']:.2f}x the steps (DATE/fixed time "
                      "measured in this run)."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    _plots(out, records, table)
    _html(out, records)


def _plots(out: Path, records: list[dict], table: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    metric_names = [k for k in next(iter(table.values()), {}) if k not in ("seconds", "peak_memory_mb")]
    for key, label in (("rho", "rho"), ("updates", "update fraction")):
        for metric in metric_names:
            points: dict[str, list[tuple[float, float, float]]] = {}
            for method, row in table.items():
                rs = [r for r in records if r["method"] == method]
                if not rs or rs[0].get(key) is None or metric not in row or row[metric]["mean"] is None:
                    continue
                x = _num(rs[0][key])
                if x is None:
                    continue
                points.setdefault(rs[0]["base"], []).append((x, row[metric]["mean"], row[metric]["ci95"] or 0.0))
            points = {b: sorted(p) for b, p in points.items() if len({x for x, _, _ in p}) > 1}
            if not points:
                continue
            fig, ax = plt.subplots(figsize=(5, 3.5))
            for base, p in points.items():
                ax.errorbar([a for a, _, _ in p], [b for _, b, _ in p], yerr=[c for _, _, c in p], marker="o",
                            capsize=3, label=base)
            ax.set_xlabel(label)
            ax.set_ylabel(metric)
            ax.legend()
            fig.tight_layout()
            fig.savefig(plots / f"{metric}_vs_{key}.png", dpi=100)
            plt.close(fig)
    curves = {}
    for r in records:
        if r.get("date_scores"):
            curves.setdefault(r["method"], []).append(r["date_scores"])
    if curves:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for method, cs in curves.items():
            length = min(len(c) for c in cs)
            mean = [sum(c[i] for c in cs) / len(cs) for i in range(length)]
            ax.plot(range(length), mean, marker="o", label=method)
        ax.set_xlabel("update number")
        ax.set_ylabel("objective before the update")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plots / "objective_per_update.png", dpi=100)
        plt.close(fig)


def _num(value) -> Optional[float]:
    text = str(value).strip()
    try:
        return float(text[:-1]) if text.endswith("%") else float(text)
    except ValueError:
        return None


def _html(out: Path, records: list[dict]) -> None:
    methods = list(dict.fromkeys(r["method"] for r in records))
    items = list(dict.fromkeys((r["item"], r["prompt"]) for r in records))
    seeds = sorted({r["seed"] for r in records})
    index = {(r["method"], r["item"], r["seed"]): r for r in records}
    rows = ["<tr><th>prompt</th><th>seed</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in methods) + "</tr>"]
    for item, prompt in items:
        for seed in seeds:
            cells = []
            for m in methods:
                r = index.get((m, item, seed))
                cells.append(f"<td><img src=\"{html.escape(r['image'])}\" width=160 title=\"{html.escape(m)}\"></td>"
                             if r else "<td></td>")
            rows.append(f"<tr><td>{html.escape(prompt)}</td><td>{seed}</td>{''.join(cells)}</tr>")
    page = ("<!doctype html><meta charset=utf-8><title>date-edit benchmark</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px;vertical-align:top;font-size:12px}</style>"
            f"<h1>{html.escape(records[0]['suite'] if records else '')}</h1>"
            "<p><a href=summary.md>summary.md</a> · <a href=summary.csv>summary.csv</a></p>"
            f"<table>{''.join(rows)}</table>")
    (out / "index.html").write_text(page)


def main(argv=None) -> int:
    """``python -m benchmarks run ...``"""
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a suite")
    r.add_argument("--suite", required=True, choices=SUITES)
    r.add_argument("--methods", default="fixed,date-clip", help=f"comma list of {', '.join(BASE_METHODS)}"
                                                                " (with @rho=, @updates=, @ug= overrides; edit "
                                                                "suites also @p2p, @blend, @mask=auto|bench|none, "
                                                                "@preset=NAME, @editor=ddpm|flowedit)")
    r.add_argument("--sweep", default=None, help="rho=0.25,0.5,1 or updates=10%%,20%%: variants of DATE methods")
    r.add_argument("--updates", default="10%", help="DATE update steps of the date-* methods")
    r.add_argument("--limit", type=int, default=None, help="first N items")
    r.add_argument("--category", default="all", help="ane: animals, animals_objects, objects or all; pie: edit "
                                                     "type ids 0..9 or names (6,change_material), or all")
    r.add_argument("--data", default=None, help="pie: the PIE-Bench folder (mapping_file.json, annotation_images/)")
    r.add_argument("--preset", default=None, help="edit suites: published settings by name (pie-ef-p2p, ef, "
                                                  "ef-p2p-readme, date-edit, flowedit-sd3, flowedit-flux); pie's "
                                                  "default: pie-ef-p2p, or flowedit-<family> on SD3/FLUX")
    r.add_argument("--seeds", type=int, default=1, help="seeds per item")
    r.add_argument("--seed", type=int, default=0, help="first seed")
    r.add_argument("--steps", type=int, default=None, help="steps (default 50; edit 100; pie: the preset's)")
    r.add_argument("--guidance", type=float, default=7.5, help="CFG scale of generation")
    r.add_argument("--size", type=int, default=None, help="edit: longer side (default native)")
    r.add_argument("--mask", choices=("none", "auto", "bench"), default="none",
                   help="edit suites, every method: auto (from where the prompts' predictions differ) or bench (pie: "
                        "the benchmark's hand-drawn mask, an oracle); per method: @mask=...")
    r.add_argument("--mask-threshold", type=float, default=0.5, help="edit, --mask auto: the mask's threshold")
    r.add_argument("--mask-peak", type=float, default=0.9, help="edit, --mask auto: the share of the map's maximum a "
                                                                "region must reach to be kept")
    r.add_argument("--p2p", action="store_true", help="edit suites, every method: Prompt-to-Prompt attention "
                                                      "control (SD, SDXL); per method: @p2p")
    r.add_argument("--cross-replace", type=float, default=None, help="edit suites, P2P: cross-attention window "
                                                                     "(default: the preset's, else 0.8)")
    r.add_argument("--self-replace", type=float, default=None, help="edit suites, P2P: self-attention window "
                                                                    "(default: the preset's, else 0.8)")
    r.add_argument("--n-avg", type=int, default=None, help=f"edit suites, FlowEdit: noise draws averaged per step "
                                                           f"(1 to {MAX_N_AVG}; default 1, the published)")
    r.add_argument("--model", default=None,
                   help=f"backbone (toy and tiny, tiny-sdxl, tiny-sd3, tiny-flux offline; default: toy for --suite "
                        f"toy, else {DEFAULT_MODEL})")
    r.add_argument("--dtype", default="fp32")
    r.add_argument("--device", default="auto")
    r.add_argument("--eval-clip", default=None, help="CLIP of the metrics (coco5k default: open_clip ViT-g-14)")
    r.add_argument("--captioner", default=None, help="ane: BLIP captioner (default blip)")
    r.add_argument("--out", default=None, help="run folder (default benchmarks/runs/<suite>)")
    r.add_argument("--fid-ref", default=None, help="FID reference: a folder of images or pytorch-fid .npz stats")
    r.add_argument("--quiet", action="store_true", help="no progress bar (it runs on rank 0 while stderr is a "
                                                           "terminal, counting the images of every rank)")
    args = p.parse_args(argv)
    if getattr(args, "model", "") is None:  # the toy suite's prompts only make sense to the toy model
        args.model = "toy" if args.suite == "toy" else DEFAULT_MODEL
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        check_arguments(args, EDIT_SUITES)
        out = run(args)
    except DateEditError as exc:  # bad input or an unavailable model; anything else is a bug: its traceback shows
        print_error(str(exc))
        return 2 if exc.usage else 1
    except OSError as exc:  # a full disk, a folder we may not write: a runtime failure, not a bug
        print_error(str(exc) or type(exc).__name__)
        return 1
    if out is None:  # a rank other than 0: rank 0 writes and prints the reports
        return 0
    print((out / "summary.md").read_text())
    if args.suite == "pie":
        print((out / "pie_table.md").read_text())
    print(f"wrote {out}/summary.md, summary.csv, plots/, index.html"
          + (", pie_table.md, pie_table.csv, reference/" if args.suite == "pie" else ""))
    return 0
