"""The real CLIP BPE tokenizer (SD 1.x/2.x), built offline from the vocabulary open_clip ships."""

from __future__ import annotations

import gzip
import json
import os
from functools import lru_cache
from pathlib import Path

CLIP_MAX_LENGTH = 77
_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level map: every byte to a printable unicode character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def cache_dir() -> Path:
    """Where date-edit keeps files it derives offline (``$DATE_EDIT_CACHE`` or ``~/.cache/date-edit``)."""
    root = os.environ.get("DATE_EDIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "date-edit")
    return Path(root)


def write_clip_tokenizer_files(out_dir: str | os.PathLike) -> Path:
    """Write ``vocab.json``/``merges.txt``/configs of the CLIP tokenizer (49,408 tokens) into ``out_dir``.

    The BPE merges come from ``open_clip/bpe_simple_vocab_16e6.txt.gz``; the vocabulary is built
    the way CLIP builds it (bytes, bytes + ``</w>``, merges, then the two special tokens), so
    ``transformers.CLIPTokenizer`` loaded from ``out_dir`` gives the same ids as the SD 1.x tokenizer.
    """
    import open_clip  # lazy: only needed to find the packaged vocabulary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tmp = out / ".writing"
    tmp.mkdir(exist_ok=True)
    (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    (tmp / "merges.txt").write_text(merges_text, encoding="utf-8")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    config = dict(special, model_max_length=CLIP_MAX_LENGTH, do_lower_case=True, tokenizer_class="CLIPTokenizer")
    (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (tmp / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    for name in _FILES:
        os.replace(tmp / name, out / name)
    tmp.rmdir()
    return out


@lru_cache(maxsize=1)
def clip_tokenizer_dir() -> Path:
    """A folder holding the CLIP tokenizer files, built once into the date-edit cache."""
    out = cache_dir() / "clip-tokenizer"
    if not all((out / name).is_file() for name in _FILES):
        write_clip_tokenizer_files(out)
    return out


def load_clip_tokenizer(path: str | os.PathLike | None = None):
    """A ``transformers.CLIPTokenizer`` from ``path`` (default: the offline SD 1.x tokenizer), checked sane."""
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(path or clip_tokenizer_dir()), local_files_only=True)
    check_tokenizer(tok)
    return tok


def check_tokenizer(tokenizer) -> None:
    """Refuse a tokenizer that cannot be the CLIP one (a failed offline fetch can yield a 5-token stub)."""
    size = len(tokenizer)
    if size < 1000 or tokenizer.model_max_length > 100_000:
        raise ValueError(
            f"the loaded tokenizer looks broken (vocabulary {size}, max length {tokenizer.model_max_length}); "
            "check the model's tokenizer/ folder"
        )
