"""The offline T5 tokenizer (SD3/FLUX ``tokenizer_3``): T5's id layout, encode/decode, save/load round trip."""

import os
from pathlib import Path

import pytest

from date_edit.t5_tokenizer import load_t5_tokenizer, t5_tokenizer_dir, write_t5_tokenizer_files


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tokenizer built once into a fresh cache: ``(folder, tokenizer)``."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DATE_EDIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    t5_tokenizer_dir.cache_clear()
    try:
        folder = t5_tokenizer_dir()
        yield folder, load_t5_tokenizer()
    finally:
        t5_tokenizer_dir.cache_clear()
        mp.undo()


def test_builds_into_the_cache_with_t5_layout(built):
    folder, tok = built
    assert folder == Path(os.environ["DATE_EDIT_CACHE"]) / "t5-tokenizer"
    assert (folder / "tokenizer.json").is_file()
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folders left
    assert len(tok) == 32_100
    assert tok.convert_tokens_to_ids(["<pad>", "</s>", "<unk>"]) == [0, 1, 2]
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1 and tok.unk_token_id == 2
    assert tok.convert_tokens_to_ids("<extra_id_0>") == 32_099
    assert tok.convert_tokens_to_ids("<extra_id_99>") == 32_000
    assert tok.model_max_length == 512


def test_encode_pad_decode(built):
    _, tok = built
    ids = tok("a photo of a cat").input_ids
    assert ids[-1] == 1 and 2 not in ids
    assert 3 <= len(ids) - 1 <= 5  # whole-word pieces, not characters
    padded = tok("a photo of a cat", padding="max_length", max_length=16).input_ids
    assert len(padded) == 16 and padded[: len(ids)] == ids and set(padded[len(ids) :]) == {0}
    assert tok.decode(padded, skip_special_tokens=True) == "a photo of a cat"
    assert tok.batch_decode([padded], skip_special_tokens=True) == ["a photo of a cat"]


def test_folder_round_trips(built, tmp_path):
    from transformers import AutoTokenizer

    folder, tok = built
    again = write_t5_tokenizer_files(tmp_path / "again")  # a second, independent build is identical
    prompts = ["a photo of a cat", "An astronaut riding a horse, oil painting", "café-style 3D render!"]
    for path in (folder, again):
        loaded = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        assert [loaded(p).input_ids for p in prompts] == [tok(p).input_ids for p in prompts]
    assert (folder / "tokenizer.json").read_bytes() == (again / "tokenizer.json").read_bytes()


def test_diffusers_style_call(built):
    _, tok = built
    kwargs = dict(padding="max_length", max_length=77, truncation=True, add_special_tokens=True, return_tensors="pt")
    ids = tok(["a red cube", ""], **kwargs).input_ids
    assert tuple(ids.shape) == (2, 77)
    assert ids[1, 0].item() == 1 and int(ids[1, 1:].abs().sum()) == 0  # empty prompt: eos, then padding
    long = tok(["word " * 200], **kwargs).input_ids
    assert tuple(long.shape) == (1, 77) and long[0, -1].item() == 1  # truncated, still ends with eos


def test_load_refuses_a_non_t5_tokenizer(tmp_path):
    from transformers import T5Tokenizer

    T5Tokenizer(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not T5-shaped"):
        load_t5_tokenizer(tmp_path)
