"""``python -m benchmarks run --suite S --methods ... --limit N``"""

from benchmarks.harness.cli import main

raise SystemExit(main())
