"""What the generation suites (toy, ane, coco5k) share: one image is one generation from the item's prompt,
measured by the suite's metric functions, with no check beyond the harness's and no report of their own."""

from __future__ import annotations

TABLES: tuple[str, ...] = ()
DEFAULT_STEPS = 50


def check(args, methods, backbone, items) -> None:
    """Nothing to refuse: every method generates on every model."""


def run_item(runner, method, item, seed: int, steps: int):
    """Generate ``item``'s prompt with ``method``: ``(Result, None, {}, steps)``."""
    from date_edit.pipeline import GenerateConfig, generate

    cfg = GenerateConfig(steps=steps, seed=seed, date=method.date, universal_guidance=method.ug,
                         guidance_scale=runner.args.guidance)
    result = generate(runner.backbone, item.prompt, config=cfg, scorer=runner._scorer(method))
    return result, None, {}, steps


def measure(runner, method, item, seed: int, result, source) -> dict:
    """The suite's metrics of the image."""
    return runner.metrics(result.images, item, source)


def write_tables(out, records, runner) -> None:
    """No tables beyond the harness's summary."""
