"""Side-by-side benchmarks: ``uv run python -m bench SUITE [--quick]``."""
