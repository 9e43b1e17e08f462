"""Packaging: locator's distribution name is free of the unrelated PyPI package ``locator``, and
the documented plugin example is a whole, valid pyproject.toml depending on it."""

import sys
from pathlib import Path

from click.testing import CliRunner

from locator.cli import cli
from locator.provenance import DISTRIBUTION, version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_the_distribution_name_is_used_everywhere():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION == "skill-locator"
    assert version(DISTRIBUTION) == project["version"]
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and project["version"] in result.output


def test_the_plugin_example_is_a_whole_pyproject():
    """docs/plugins.md includes docs/examples/locator-magnitude/ (which the CLI tests install)."""
    folder = ROOT / "docs" / "examples" / "locator-magnitude"
    example = tomllib.loads((folder / "pyproject.toml").read_text())
    assert example["build-system"]["build-backend"]
    assert any(d.startswith(DISTRIBUTION) for d in example["project"]["dependencies"])
    assert example["project"]["entry-points"]["locator"]
    assert "uses_controls = False" in (folder / "locator_magnitude.py").read_text()
    page = (ROOT / "docs" / "plugins.md").read_text()
    assert '--8<-- "docs/examples/locator-magnitude/pyproject.toml"' in page
