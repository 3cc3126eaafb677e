"""What every suite shares: the item it hands the harness and where the suites' data lie."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "benchmarks" / "data"


@dataclass
class Item:
    """One benchmark prompt (and for edits, its source image and prompt)."""

    id: str
    prompt: str
    group: str = "all"
    image: Optional[str] = None
    source_prompt: str = ""
    pie: Optional[object] = None  # the PIE-Bench entry (benchmarks.suites.pie.data.PieEntry) of a pie item
