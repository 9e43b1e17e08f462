"""The plugin surface: the core names no method, built-in kinds and layouts arrive through the
plugin path, the built-in methods need only `import locator`, hooks get only the arguments
they declare, and `matched_to` is a field of a localization."""

import ast
import json
import warnings
from pathlib import Path

import pytest
import torch

import locator
from locator.localization import Localization
from locator.plugins import register_plugin, registry, unregister_plugin

ROOT = Path(__file__).resolve().parents[2]


def test_stats_names_no_method():
    text = (ROOT / "locator" / "stats.py").read_text().lower()
    for method in (*locator.list_localizers(), "mathneuro", "wanda", "lape", "snip"):
        assert method not in text, f"locator/stats.py names the method {method!r}"


def test_builtin_kinds_and_layouts_come_through_the_plugin_path():
    statistics, layouts = registry("register_statistics"), registry("register_layouts")
    assert statistics.source("input_norm_sum") == "statistics"
    assert statistics.source("weight_gradient_saliency") == "statistics"
    assert statistics.source("input_norms_by_sample_bf16") == "mathneuro"
    assert statistics.source("lape_published_active_count") == "lape"
    assert layouts.source("gated") == "layouts"
    plugins = {info.name: info for info in locator.list_plugins()}
    assert plugins["statistics"].hooks == ("register_statistics",)
    assert plugins["layouts"].hooks == ("register_layouts",)
    assert plugins["statistics"].distribution == plugins["mathneuro"].distribution


# Every built-in plugin imports `locator` alone, except that the toy plugin is the face of the
# `locator.toy` package, the testbed's own public API (its data, planting, evaluation, training):
# exporting those from `locator` would put one testbed's parts on every plugin's surface.
OWN_PACKAGE = {"toy": "locator.toy"}


@pytest.mark.parametrize("path", sorted((ROOT / "plugins").glob("[!_]*.py")), ids=lambda p: p.stem)
def test_builtin_plugins_import_only_locator(path):
    package = OWN_PACKAGE.get(path.stem)
    for node in ast.walk(ast.parse(path.read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            inside = package is not None and name.startswith(f"{package}.")
            assert name == "locator" or inside or name.split(".")[0] != "locator", name


def test_a_hook_implementation_declaring_fewer_arguments_than_the_spec_is_called():
    calls = []

    class Quiet:
        @locator.hookimpl
        def register_localizers(self):
            calls.append("localizers")

        @locator.hookimpl
        def register_commands(self):
            calls.append("commands")

    import click

    from locator.plugins import register_commands

    register_plugin(Quiet(), name="quiet")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a failed hook costs a warning: there must be none
            assert "mathneuro" in locator.list_localizers()
            register_commands(click.Group("test"))
        assert calls == ["localizers", "commands"]
    finally:
        unregister_plugin("quiet")


def _localization(**metadata):
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[0, :3] = True
    return Localization.from_masks({"w": mask}, method="random", proportion=0.1, **metadata)


def test_matched_to_is_saved_and_loaded(tmp_path):
    found = _localization(matched_to="mathneuro")
    loaded = Localization.load(found.save(tmp_path / "a.safetensors"))
    assert loaded.matched_to == "mathneuro" and loaded.config == {}
    assert loaded.metadata() == found.metadata()
    plain = Localization.load(_localization().save(tmp_path / "b.safetensors"))
    assert plain.matched_to is None


def test_a_file_with_matched_to_in_its_config_still_loads(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save

    path = _localization().save(tmp_path / "new.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["locator"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    del header["matched_to"]  # as files were written before it was a field
    header["config"] = {"matched_to": "lape"}
    old = tmp_path / "old.safetensors"
    old.write_bytes(save(tensors, metadata={"locator": json.dumps(header)}))
    loaded = Localization.load(old)
    assert loaded.matched_to == "lape" and loaded.config == {}


def test_every_registering_hook_has_its_one_registry():
    from locator.plugins import REGISTRIES, HookSpecs

    hooks = {name for name in vars(HookSpecs) if name.startswith("register_")}
    assert set(REGISTRIES) == hooks - {"register_commands"}
    for hook, spec in REGISTRIES.items():  # each builds, its expected type imported on first use
        assert registry(hook).kind == spec.kind and registry(hook).names()
