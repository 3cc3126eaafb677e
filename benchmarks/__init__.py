"""date-edit benchmarks (cost of DATE on a GPU; quality suites come with the harness)."""
