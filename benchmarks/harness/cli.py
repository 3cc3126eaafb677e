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

import os

from benchmarks.harness.checks import check_arguments, print_error
from benchmarks.harness.methods import BASE_METHODS
from benchmarks.harness.runner import run
from benchmarks.suites import EDIT_SUITES, SUITES, suite_module
from date_edit.choices import DEFAULT_MODEL
from date_edit.errors import DateEditError
from date_edit.limits import MAX_N_AVG


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
    r.add_argument("--captioner", default=None,
                   help="ane: the captioner of the text-text metric (default blip); edit suites: the captioner of "
                        "@source=auto (default: the model's, as date-edit edit)")
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
    tables = suite_module(args.suite).TABLES
    for name in tables:
        if name.endswith(".md"):
            print((out / name).read_text())
    print(f"wrote {out}/summary.md, summary.csv, plots/, index.html" + "".join(f", {name}" for name in tables))
    return 0
