"""A T5-layout tokenizer (SD3/FLUX ``tokenizer_3``), built offline from the vocabulary open_clip ships."""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from date_edit.tokenizer import _bytes_to_unicode, cache_dir

T5_VOCAB_SIZE = 32_100
T5_MAX_LENGTH = 512
T5_EXTRA_IDS = 100
_SPECIAL = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5
_FILES = ("tokenizer.json", "tokenizer_config.json")
_WORD = "\u2581"  # SentencePiece word-start marker


def _merge_pieces() -> list[str]:
    """Unicode pieces of the CLIP BPE merges, in merge (frequency) order, without the ``</w>`` suffix."""
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it (and torch)
    if spec is None or spec.origin is None:
        raise ImportError("open_clip is needed for its packaged BPE vocabulary (pip install open_clip_torch)")
    bpe_path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_of = {char: byte for byte, char in _bytes_to_unicode().items()}
    pieces = []
    for merge in merges:
        core = "".join(merge).removesuffix("</w>")
        try:  # CLIP merges are byte-level; a piece cutting a UTF-8 sequence in half is no text
            text = bytes(byte_of[c] for c in core).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            continue
        if text.isprintable() and not any(c.isspace() for c in text):
            pieces.append(text)
    return pieces


def t5_vocab() -> list[tuple[str, float]]:
    """The 32,100 ``(piece, score)`` pairs, laid out as T5's vocabulary.

    ``<pad>``, ``</s>``, ``<unk>``, then ``▁``, then word-start (``▁x``) and inner (``x``) forms of the CLIP
    merges in merge order, then single characters (ASCII and Latin-1, bare and word-start) so any such text
    can be spelled, then the sentinels ``<extra_id_99>`` ... ``<extra_id_0>``. Ordinary scores fall
    Zipf-like with rank, so common and longer pieces win the Unigram segmentation.
    """
    chars = [chr(c) for c in range(0x21, 0x7F)] + [chr(c) for c in range(0xA1, 0x100) if c != 0xAD]
    chars += [_WORD + c for c in chars]
    budget = T5_VOCAB_SIZE - len(_SPECIAL) - T5_EXTRA_IDS - 1 - len(chars)
    seen = set(chars) | {_WORD}
    merged: list[str] = []
    for text in _merge_pieces():
        for piece in (_WORD + text, text):
            if len(merged) < budget and piece not in seen:
                seen.add(piece)
                merged.append(piece)
    if len(merged) < budget:
        raise ValueError(f"the CLIP merges gave only {len(merged)} of {budget} pieces for the T5 vocabulary")
    ordinary = [_WORD] + merged + chars
    vocab = [(tok, 0.0) for tok in _SPECIAL]
    vocab += [(piece, -2.0 - math.log1p(rank)) for rank, piece in enumerate(ordinary)]
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(T5_EXTRA_IDS - 1, -1, -1)]
    return vocab


def write_t5_tokenizer_files(out_dir: str | os.PathLike) -> Path:
    """Save the T5 tokenizer (``save_pretrained``, ``model_max_length`` 512) into ``out_dir``, atomically.

    The files are written into a temporary sibling folder that then replaces ``out_dir``, so a reader never
    sees a half-written tokenizer.
    """
    from transformers import T5Tokenizer

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok = T5Tokenizer(vocab=t5_vocab(), extra_ids=T5_EXTRA_IDS, model_max_length=T5_MAX_LENGTH)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.writing-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache folder is shared like the CLIP one
    stale = out.with_name(f".{out.name}.stale-{os.getpid()}")
    try:
        tok.save_pretrained(str(tmp))
        if out.exists():
            os.replace(out, stale)
        os.replace(tmp, out)
    except OSError:
        if not _complete(out):  # another process may have won the race with an equal folder
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
    return out


def _complete(folder: Path) -> bool:
    """Whether ``folder`` holds the files ``save_pretrained`` writes for the tokenizer."""
    return all((folder / name).is_file() for name in _FILES)


@lru_cache(maxsize=1)
def t5_tokenizer_dir() -> Path:
    """A folder holding the T5 tokenizer files, built once into the date-edit cache."""
    out = cache_dir() / "t5-tokenizer"
    if not _complete(out):
        write_t5_tokenizer_files(out)
    return out


def load_t5_tokenizer(path: str | os.PathLike | None = None):
    """A T5 tokenizer from ``path`` (default: the offline one in the cache), checked to have T5's layout."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path or t5_tokenizer_dir()), local_files_only=True)
    if len(tok) != T5_VOCAB_SIZE or tok.eos_token_id != 1:
        raise ValueError(
            f"the loaded tokenizer is not T5-shaped (vocabulary {len(tok)}, eos id {tok.eos_token_id}); "
            f"expected {T5_VOCAB_SIZE} and 1"
        )
    return tok
