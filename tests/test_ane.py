"""Multi-concept (Attend-and-Excite) mode: prompt set, metrics, min-concept objective, the CLI."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from date_edit.multiconcept import (
    IMAGENET_TEMPLATES,
    MinConceptScorer,
    TemplateTextEncoder,
    ane_metrics,
    load_ane_prompts,
    mean_ci95,
    split_concepts,
    template_texts,
)

EXE = shutil.which("date-edit", path=str(Path(sys.executable).parent)) or "date-edit"


def test_prompt_set_is_the_published_276():
    prompts = load_ane_prompts("all")
    assert {k: len(v) for k, v in prompts.items()} == {"animals": 66, "animals_objects": 144, "objects": 66}
    with pytest.raises(ValueError, match="category"):
        load_ane_prompts("plants")


@pytest.mark.parametrize(
    "prompt,concepts",
    [("a cat and a dog", ["a cat", "a dog"]), ("a bear with a glasses", ["a bear", "a glasses"]),
     ("a red car and a blue bench", ["a red car", "a blue bench"]), ("a cat", ["a cat"])],
)
def test_split_concepts(prompt, concepts):
    assert split_concepts(prompt) == concepts


def test_templates():
    assert len(IMAGENET_TEMPLATES) == 80
    texts = template_texts("a cat")
    assert texts[0] == "a bad photo of a cat." and len(set(texts)) == 80


def test_min_object_is_the_smaller_concept_and_min_concept_is_differentiable(tiny_scorer):
    enc = TemplateTextEncoder(tiny_scorer)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    metrics = ane_metrics(images, "a cat and a dog", enc)
    for m in metrics:
        assert m.min_object == pytest.approx(min(m.per_concept)) and len(m.per_concept) == 2
    objective = MinConceptScorer(tiny_scorer)
    x = images.clone().requires_grad_(True)
    h = objective(x, ["a cat and a dog"] * 2)
    h.sum().backward()
    assert h.shape == (2,) and float(x.grad.abs().sum()) > 0


def test_mean_ci95():
    s = mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert s["mean"] == 2.5 and s["n"] == 4 and s["ci95"] == pytest.approx(1.96 * (5 / 3 / 4) ** 0.5)
    assert mean_ci95([])["mean"] is None


def test_ane_cli_writes_metrics(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([EXE, "ane", "--model", "tiny", "--category", "animals", "--limit", "2", "--seeds", "2",
                          "--json", "--out", str(tmp_path / "ane")], capture_output=True, text=True, timeout=600,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["seeds"] == [0, 1] and report["prompts"] == 2
    overall = report["metrics"]["overall"]
    for metric in ("full_prompt", "min_object", "text_text"):
        assert overall[metric]["n"] == 4 and overall[metric]["ci95"] is not None
    assert (tmp_path / "ane" / "metrics.json").is_file()
    lines = (tmp_path / "ane" / "records.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(Path(json.loads(line)["image"]).is_file() for line in lines)
