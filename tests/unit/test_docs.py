"""The documentation's option and column tables are generated from the fields' help by the mkdocs
hook ``docs/hooks/options.py``: every marker renders every field, each with help, and no page
keeps a hand-written table of a documented class's fields."""

import dataclasses
import importlib.util
import re
from pathlib import Path

from locator.localizer import localizers

ROOT = Path(__file__).resolve().parents[2]
PAGES = {path: path.read_text() for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]}
DOCUMENTED = {
    "locator.ModelOptions",
    "locator.CalibrationOptions",
    "locator.EvaluationOptions",
    "locator.EvaluationRequest",
    "locator.bench.suite.CorporaSpec",
    "locator.bench.suite.MethodSpec",
    "locator.bench.suite.TaskSpec",
    "locator.bench.suite.SkillSpec",
    "locator.bench.results.Row",
    "locator.bench.results.Sample",
    "locator.toy.plant.PlantingSettings",
    "locator.bench.ground_truth.GroundTruthSpec",
    "methods",
}


def load_hook():
    spec = importlib.util.spec_from_file_location("options_hook", ROOT / "docs/hooks/options.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


HOOK = load_hook()


def classes(target):
    """The classes whose fields a marker's table shows."""
    if target == "methods":
        registry = localizers()
        return [registry.get(name).Config for name in registry.names()]
    return [HOOK.resolve(target)]


def test_every_marker_renders_every_field_with_its_help():
    found = set()
    for path, text in PAGES.items():
        for marker in HOOK.MARKER.finditer(text):
            target, leave_out = marker[2], tuple(marker[3].split()[1:])
            rendered = HOOK.render(marker[1], target, leave_out)
            found.add(target)
            for cls in classes(target):
                for field in dataclasses.fields(cls):
                    if field.name in leave_out:
                        continue
                    help = field.metadata.get("help", "")
                    ours = cls.__module__.split(".")[0] in ("locator", "locator_plugins")
                    assert help or not ours, f"{cls.__name__}.{field.name} has no help"
                    shown = re.escape(HOOK.escape(help))
                    row = rf"^\|(?:[^|]*\|)? `{field.name}`[^|]* \|.*\| {shown} \|$"
                    assert re.search(row, rendered, re.M), (path, field.name)
    assert DOCUMENTED <= found, f"no table of {sorted(DOCUMENTED - found)} in the docs"
    assert "- docs/hooks/options.py" in (ROOT / "mkdocs.yml").read_text()  # mkdocs runs the hook


def test_no_page_writes_a_documented_class_s_fields_by_hand():
    """A Markdown table row that starts with a documented field's name, or names three fields of
    one class, restates the generated tables and would drift from the code."""
    fields = [{f.name for f in dataclasses.fields(c)} for t in DOCUMENTED for c in classes(t)]
    for path, text in PAGES.items():
        for line in text.splitlines():
            if not line.startswith("|"):
                continue
            named = set(re.findall(r"`(\w+)`", line))
            first = re.match(r"\| `(\w+)`", line)
            assert not first or not any(first[1] in f for f in fields), (path.name, line)
            assert not any(len(named & f) >= 3 for f in fields), (path.name, line)


def test_a_cell_shows_angle_brackets_and_pipes_as_written():
    # Markdown would read `<name>` as an HTML tag and drop it, and `|` as a new cell.
    assert HOOK.escape("a <name>-x | b, `<kept>`") == r"a &lt;name&gt;-x \| b, `<kept>`"
