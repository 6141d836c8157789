"""Side-by-side benchmarks; each writes its figures and exact command to benchmarks/results/*.json."""
