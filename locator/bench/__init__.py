"""The benchmark harness: declarative suites, one grid runner, a Parquet results dataset, a report.

A suite (TOML, `locator.bench.suite`) names models, target and control corpora, methods with
their configs, proportions, intervention factors, seeds, sample counts and evaluation tasks. The
plan (`locator.bench.plan`) is the whole grid, hashed and sharded without a model; the runner
(`locator.bench.runner`) shares every statistics pass and ranking it can, edits the model in
place and restores it, and writes one Parquet part file per configuration
(`locator.bench.results`), so a killed run resumes where it stopped and shards of one grid form
one dataset. `locator.bench.report` turns a results folder into Markdown with
plots. Importing this package is cheap; torch loads only when a run starts.
"""

from __future__ import annotations

from locator.bench.suite import Suite, load_suite

__all__ = ["Suite", "load_suite"]
