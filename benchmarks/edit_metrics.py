"""LPIPS (Zhang et al., CVPR 2018) for the edit suite: how far an edit moved from its source, as editing papers
report it (the DDPM-inversion paper pairs it with CLIP to the target prompt).

Through torchmetrics' implementation of the reference network (AlexNet features, the learned linear heads
torchmetrics ships). The real variant needs torchvision's ImageNet AlexNet weights (downloaded once into the
torch hub cache); ``random`` builds the same network with random weights, offline, for tests and smoke runs (its
numbers measure nothing).
"""

from __future__ import annotations

import torch


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
