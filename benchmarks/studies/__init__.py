"""One-off studies on the toy world and the tiny models (``python -m benchmarks.studies.<name>``); their results
are in benchmarks/results/."""
