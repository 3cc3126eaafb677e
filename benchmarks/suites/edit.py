"""The edit suite: the sample photos of ``data/edit_set.json`` edited to their target prompts, measured by CLIP to
the target and LPIPS, PSNR and SSIM to the source (the DDPM-inversion paper's pair, with two pixel measures).

LPIPS (Zhang et al., CVPR 2018) is torchmetrics' implementation of the reference network (AlexNet features, the
learned linear heads torchmetrics ships). The real variant needs torchvision's ImageNet AlexNet weights
(downloaded once into the torch hub cache); ``random`` builds the same network with random weights, offline, for
tests and smoke runs (its numbers measure nothing).
"""

from __future__ import annotations

import json

import torch

from benchmarks.suites.base import DATA, ROOT, Item
from benchmarks.suites.editing import DEFAULT_STEPS, check, run_item
from date_edit.choices import OFFLINE_MODELS
from date_edit.metrics import psnr_db as psnr

__all__ = ["DEFAULT_STEPS", "TABLES", "Lpips", "Metrics", "check", "items", "measure", "run_item", "ssim",
           "write_tables"]
TABLES: tuple[str, ...] = ()


def items(limit, category, data) -> list[Item]:
    """The photos and prompts of ``data/edit_set.json``."""
    spec = json.loads((DATA / "edit_set.json").read_text())
    return [Item(id=e["id"], prompt=e["target"], group="edit", image=str(ROOT / e["image"]),
                 source_prompt=e["source"]) for e in spec["items"]]


class Metrics:
    """CLIP to the target prompt; LPIPS, PSNR and SSIM to the source photo."""

    def __init__(self, model: str, device, eval_clip, captioner) -> None:
        from date_edit.scorers import build_scorer

        offline = model in OFFLINE_MODELS
        self.clip = build_scorer("clip:tiny" if offline else (eval_clip or "clip"), device=device)
        self.lpips = Lpips("random" if offline else "alex", device=device)

    def __call__(self, images: torch.Tensor, item: Item, source) -> dict:
        """Metrics of one edit."""
        with torch.no_grad():
            out = {"clip_to_target": float(self.clip(images, [item.prompt])[0])}
            if source is not None:
                out["lpips_to_source"] = float(self.lpips(images, source)[0])
                out["psnr_to_source"] = psnr(images, source)
                out["ssim_to_source"] = ssim(images, source)
            return out


def measure(runner, method, item, seed: int, result, source) -> dict:
    """The suite's metrics of the edit."""
    return runner.metrics(result.images, item, source)


def write_tables(out, records, runner) -> None:
    """No tables beyond the harness's summary."""


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


class Lpips:
    """``lpips(a, b) -> (B,)`` distances of images ``(B, 3, H, W)`` in ``[0, 1]`` (lower: more alike).

    Args:
        variant: ``alex`` (the reference: pretrained AlexNet and linear heads) or ``random`` (random weights).
        device: where the network runs.
    """

    def __init__(self, variant: str = "alex", device: str | torch.device = "cpu") -> None:
        from torchmetrics.functional.image.lpips import _LPIPS

        if variant not in ("alex", "random"):
            raise ValueError(f"LPIPS variant {variant!r}: use alex or random")
        self.variant = variant
        try:
            if variant == "random":
                torch.manual_seed(0)
                net = _LPIPS(pretrained=False, net="alex", pnet_rand=True)
            else:
                net = _LPIPS(pretrained=True, net="alex", pnet_rand=False)
        except Exception as exc:  # noqa: BLE001 - a missing download is one line, not a traceback
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeError(f"LPIPS (AlexNet) could not be built: {first[:160]}; torchvision's AlexNet weights are "
                               "downloaded once into the torch hub cache where there is network") from None
        self.net = net.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS of each pair, images in ``[0, 1]`` (scaled to ``[-1, 1]`` as the network expects)."""
        if a.shape != b.shape:
            raise ValueError(f"LPIPS needs images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        x, y = (t.to(self.device, torch.float32) * 2.0 - 1.0 for t in (a, b))
        return self.net(x, y).reshape(-1).float().cpu()
