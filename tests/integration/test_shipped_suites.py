"""Every suite shipped in benchmarks/ parses and plans (no model loads), and the list of shipped
suites in docs/suites.md names it with the number of configurations it plans."""

from pathlib import Path

import pytest

from locator.bench import plan
from locator.bench.suite import load_suite
from tests.cli.test_bench_cli import BENCHMARKS
from tests.integration.test_matrix_suite import needs_shared_data

LIST = Path(__file__).resolve().parents[2] / "docs" / "suites.md"


@needs_shared_data  # the real suites' data_dir
@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.toml")), ids=lambda path: path.name)
def test_every_shipped_suite_plans_the_configurations_its_listing_states(path):
    configurations = plan.plan(load_suite(path))
    rows = [line for line in LIST.read_text().splitlines() if line.startswith(f"| `{path.name}` |")]
    assert len(rows) == 1, f"docs/suites.md lists {path.name} {len(rows)} times"
    assert f"({len(configurations)} configurations)" in rows[0]
