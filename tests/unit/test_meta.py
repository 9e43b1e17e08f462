"""Meta-tests: the core knows no method by name; every hook is documented and used; every plugin
module has its tests."""

import ast
import inspect
import re
from pathlib import Path

from locator.plugins import HookSpecs

CORE = Path(__file__).resolve().parents[2] / "locator"
PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
PLUGIN_TESTS = Path(__file__).resolve().parents[1] / "plugins"


def test_core_imports_no_plugin():
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [alias.name for alias in node.names]
                assert not any(n.startswith("locator_plugins") for n in names), path


def test_every_hookspec_has_a_docstring_with_an_example():
    hooks = [name for name, _ in inspect.getmembers(HookSpecs, inspect.isfunction)]
    assert {
        "register_localizers",
        "register_datasets",
        "register_evaluators",
        "register_commands",
        "register_models",
        "register_statistics",
    } <= set(hooks)
    for name in hooks:
        doc = inspect.getdoc(getattr(HookSpecs, name)) or ""
        assert "Example::" in doc and "@locator.hookimpl" in doc, name


def test_builtin_plugins_are_entry_points():
    import importlib.metadata

    entry_points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="locator")}
    for path in PLUGINS.glob("*.py"):
        if path.stem != "__init__" and "hookimpl" in path.read_text():
            assert entry_points.get(path.stem) == f"locator_plugins.{path.stem}", path.stem


def test_plugins_and_their_test_files_match_one_to_one():
    """tests/plugins/ mirrors plugins/: plugins/<module>.py is tested by
    tests/plugins/test_<module>.py, and every test file there tests a plugin (the core's tests
    live in tests/unit/ and tests/integration/)."""
    modules = {path.stem for path in PLUGINS.glob("*.py") if path.stem != "__init__"}
    tested = {path.stem.removeprefix("test_") for path in PLUGIN_TESTS.glob("test_*.py")}
    assert not modules - tested, f"plugins without their test file: {modules - tested}"
    assert not tested - modules, f"tests/plugins/ files that name no plugin: {tested - modules}"


def test_the_readme_stays_short_and_its_links_resolve():
    """The README is a newcomer's page (the rest is the site under docs/, which `mkdocs build
    --strict` checks); its relative links, and CONTRIBUTING's, name files that exist."""
    root = CORE.parent
    assert len((root / "README.md").read_text().splitlines()) <= 200
    for page in ("README.md", "CONTRIBUTING.md", "benchmarks/README.md"):
        text = (root / page).read_text()
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (root / page).parent.joinpath(target).exists(), (page, target)


def test_every_builtin_method_option_has_help_for_the_listing():
    """Per-field help lives on the field (`locator.option`) and feeds `locator localizers`."""
    from locator.listings import localizer_rows

    for row in localizer_rows():
        if row["plugin"] in {p.stem for p in PLUGINS.glob("*.py")}:
            missing = [key for key in row["options"] if not row.get("help", {}).get(key)]
            assert not missing, f"{row['name']}: options without help: {missing}"
