"""Configs parsed by field type, registries with did-you-mean, errors in one line."""

from dataclasses import dataclass
from typing import Literal

import pytest

import locator
from locator import LocatorError, UnknownNameError
from locator.localizer import Localizer, make_config
from locator.plugins import Registry
from locator.ranking import top_count


@dataclass(frozen=True, kw_only=True)
class ExampleConfig:
    norm: Literal["pooled", "per_sample"] = "pooled"
    factor: float = 1.0
    steps: int = 3
    exact: bool = False
    label: str | None = None


class Example(Localizer):
    name = "example"
    Config = ExampleConfig

    def localize(self, context, proportion):
        raise AssertionError("not run in these tests")


def test_a_method_must_implement_localize_or_localize_many():
    with pytest.raises(TypeError, match="must implement localize"):

        class Nothing(Localizer):
            name = "nothing"


def test_strings_are_parsed_by_field_type():
    config = make_config(
        Example,
        {"norm": "per_sample", "factor": "1.5", "steps": "4", "exact": "true", "label": "none"},
    )
    assert config == ExampleConfig(norm="per_sample", factor=1.5, steps=4, exact=True)
    assert make_config(Example, {"factor": 2, "label": "x"}).factor == 2.0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"nrom": "pooled"}, "Unknown option of example 'nrom'. Did you mean 'norm'?"),
        ({"norm": "both"}, "must be one of ['pooled', 'per_sample']"),
        ({"steps": "many"}, "option 'steps' of example must be an integer, got 'many'."),
        ({"steps": 1.5}, "must be an integer"),
        ({"exact": "maybe"}, "must be true or false"),
    ],
)
def test_bad_options_give_one_line(options, message):
    with pytest.raises(LocatorError) as error:
        make_config(Example, options)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_localizer_suggests_and_lists_installed():
    with pytest.raises(UnknownNameError) as error:
        locator.get_localizer("mathnuero")
    assert str(error.value).startswith("Unknown localizer 'mathnuero'. Did you mean 'mathneuro'?")
    assert "Installed:" in str(error.value) and "random" in str(error.value)


def test_registry_collision_names_both_plugins():
    registry = Registry("localizer")
    registry.add("x", object(), "first-plugin")
    with pytest.raises(LocatorError, match="'first-plugin' and by plugin 'second-plugin'"):
        registry.add("x", object(), "second-plugin")


def test_top_count_is_floor_robust_to_rounding():
    assert top_count(0.29, 100) == 29
    assert top_count(0.15, 4096) == 614
    assert top_count(0.0001, 4096) == 0
    assert top_count(1.0, 7) == 7


def test_import_locator_is_cheap():
    import subprocess
    import sys

    code = "import sys, locator; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"proportions": [True]}, "proportion must be a number in (0, 1], got True"),
        ({"proportions": [0.0]}, "proportion must be in (0, 1], got 0.0"),
        ({"proportions": [1.5]}, "proportion must be in (0, 1], got 1.5"),
        ({"proportions": ["0.1"]}, "proportion must be a number"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"seed": False}, "seed must be an integer >= 0, got False"),
        ({"seed": 1.0}, "seed must be an integer >= 0, got 1.0"),
        ({"controls": 0, "localizer": "lape"}, "needs at least 1 control corpus(es)"),
        ({"reference": True, "localizer": "mathneuro"}, "does not take a reference"),
    ],
)
def test_request_checks_live_in_one_function(request_, message):
    from locator.localizer import check_request

    request_ = dict(request_)
    name = request_.pop("localizer", None)
    localizer = locator.get_localizer(name) if name else None
    with pytest.raises(LocatorError) as error:
        check_request(localizer, **request_)
    assert message in str(error.value) and "\n" not in str(error.value)
    check_request(locator.get_localizer("random"), proportions=[1, 0.5], seed=0, reference=True)


@pytest.mark.parametrize(
    "hook", ["register_localizers", "register_datasets", "register_statistics"]
)
def test_registering_the_wrong_type_costs_one_warning_naming_the_fix(hook):
    from locator.data import datasets
    from locator.localizer import localizers
    from locator.plugins import register_plugin, unregister_plugin
    from locator.stats import statistics

    class Wrong:
        pass

    def register_things(register):
        register(Example() if hook == "register_localizers" else Wrong)

    plugin = type("Plugin", (), {hook: staticmethod(locator.hookimpl(register_things))})()
    register_plugin(plugin, name="wrong-type")
    build = {
        "register_localizers": localizers,
        "register_datasets": datasets,
        "register_statistics": statistics,
    }[hook]
    try:
        with pytest.warns(UserWarning) as caught:
            build()
    finally:
        unregister_plugin("wrong-type")
    messages = [str(w.message) for w in caught if "wrong-type" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0]
    if hook == "register_localizers":
        assert (
            "registered an instance of Example as a localizer; register the class itself"
            in (messages[0])
        )
    else:
        assert "registered Wrong as a " in messages[0]


def test_a_failing_register_commands_costs_one_warning(recwarn):
    import click

    from locator.plugins import register_commands, register_plugin, unregister_plugin

    class Broken:
        @locator.hookimpl
        def register_commands(self, cli):
            raise RuntimeError("boom")

    group = click.Group()
    register_plugin(Broken(), name="broken-commands")
    try:
        register_commands(group)
    finally:
        unregister_plugin("broken-commands")
    messages = [str(w.message) for w in recwarn if "broken-commands" in str(w.message)]
    assert len(messages) == 1 and "RuntimeError: boom" in messages[0]
    assert "toy" in group.commands  # the other plugins' commands are still added
