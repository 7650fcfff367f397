"""Benchmark scripts (see DESIGN.md: each prints ratios measured side by side in one run)."""
