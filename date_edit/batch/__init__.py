"""Folder and manifest jobs: plan the items, skip what is up to date, edit the rest, record every item.

Rooms: :mod:`.items` (items, settings, hashes), :mod:`.plan` (folder walk, manifests), :mod:`.results` (the
files in the output folder), :mod:`.decision` (the pure per-item decision), :mod:`.run` (running items),
:mod:`.job` (the job, on one process or several). This package re-exports the API.

A job is a list of :class:`Item` (an input file, its output path, its prompt and per-item option
overrides), planned from a folder (:func:`plan_folder`) or a CSV/JSONL/JSON manifest
(:func:`plan_manifest`). :func:`run_batch` (:mod:`.job`) loads the model once, batches items that share a processed
size and settings, and appends one record per item to ``OUT_DIR/results.jsonl`` (flushed and fsynced).
One bad item never stops the rest: it is recorded as ``failed`` with a one-line reason.

Resume key. Every output PNG carries its own record in its ``date-edit`` text chunk, written
atomically with the pixels, so the output is the source of truth and ``results.jsonl`` only a log.
An item is up to date when its output decodes, that record says ``ok``, its ``input_sha256`` is the
input's content hash now, and either its ``options_hash`` (the output-affecting options as given:
checked without importing torch) or its ``config_hash`` (the resolved settings: ``EditConfig`` with
the resolved skip, DATE config and seed, model, dtype, size, resize, prompts, and the scorer when DATE
steers) matches. A crash between the PNG and its results line therefore loses nothing.

Safety. Outputs are written by :func:`date_edit.imaging.save_png` (temp file, fsync, rename; never
the input; only inside the real path of ``OUT_DIR``, never through a link); inputs are only read, opened
as regular files whose size is checked before a byte is read (:func:`date_edit.imaging.open_input`);
``OUT_DIR`` is pruned from the input walk, so it may sit inside ``INPUT_DIR`` and outputs are never read
back as inputs (``OUT_DIR`` equal to, or containing, ``INPUT_DIR`` is refused); a lock file keeps two
runs out of one ``OUT_DIR`` (removed when the run ends); temp files a killed run left behind are removed at
the next start; a torn last line of ``results.jsonl`` is dropped.

Several processes. Under torchrun, ``accelerate launch`` or srun (``dist``), the ranks share the to-do list
round-robin, each writes its own log, and rank 0 merges them by record id (:mod:`.job`).
"""

from ..errors import BatchError  # noqa: F401
from .items import (  # noqa: F401
    DATE_OPTIONS, DEFAULT_GLOBS, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, LOCK_NAME, MANIFEST_COLUMNS,
    METADATA_KEY, OPTION_TYPES, RESULTS_NAME, BatchInterrupted, Item, ItemSettings, Status, Summary,
    coerce_option, options_hash, sha256_file,
)
from .plan import check_out_dir, plan_folder, plan_manifest, stays_inside, walk_inputs  # noqa: F401
from .results import (  # noqa: F401
    ResultsLog, _locked, clean_temp_files, dumps_record, json_safe, merge_rank_logs, output_state, rank_log_name,
    repair_results,
)
from .decision import Decision, decide  # noqa: F401
from .run import as_float32, basic_record, is_out_of_memory, reason  # noqa: F401
from .job import run_batch  # noqa: F401
