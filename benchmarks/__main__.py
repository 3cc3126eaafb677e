"""``python -m benchmarks run --suite S --methods ... --limit N``"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import main  # noqa: E402

raise SystemExit(main())
