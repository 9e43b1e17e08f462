"""Plugins: the pluggy hook specifications, entry-point loading and the registries.

Every method, dataset, evaluator, model, statistic kind and MLP layout, the built-in ones
included, arrives through the same path: a module listed under the ``locator`` entry-point group
implements ``register_<things>(register)`` hooks marked with ``@locator.hookimpl``; each hook
fills one registry (`REGISTRIES`). Entry points load one at a time, so a broken plugin costs one
warning naming its distribution and the rest keep working. ``LOCATOR_LOAD_PLUGINS`` (a
comma-separated list of entry-point names; empty for none) restricts what is loaded; the generic
statistic kinds and MLP layouts are the entry points ``statistics`` and ``layouts``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pluggy

from locator.errors import LocatorError, UnknownNameError

hookspec = pluggy.HookspecMarker("locator")
hookimpl = pluggy.HookimplMarker("locator")

ENTRY_POINT_GROUP = "locator"
LOAD_PLUGINS_VARIABLE = "LOCATOR_LOAD_PLUGINS"

T = TypeVar("T")
_Hook = TypeVar("_Hook", bound=Callable[..., Any])


@dataclass(frozen=True)
class RegistrySpec:
    """What one ``register_<things>`` hook registers: `kind` names one item in messages,
    `expected` is the ``module:Class`` every item must be (imported on first use, since those
    modules import this one), a subclass of it when `classes`. Items are named by `.name`.

    It decorates its hook in `HookSpecs`, which it marks as a hook specification, and enters
    itself in `REGISTRIES` under the hook's name, so each registry is declared once."""

    kind: str
    expected: str
    classes: bool = False

    def __call__(self, hook: _Hook) -> _Hook:
        REGISTRIES[hook.__name__] = self
        return hookspec(hook)


REGISTRIES: dict[str, RegistrySpec] = {}
"""Every registry, by the hook that fills it."""


class HookSpecs:
    """The hooks a locator plugin may implement. Arguments may be added, never removed: each
    implementation is called with only the arguments it declares."""

    @RegistrySpec("localizer", "locator.localizer:Localizer", classes=True)
    def register_localizers(self, register: Callable[[type], None]) -> None:
        """Register `Localizer` subclasses.

        Example::

            @locator.hookimpl
            def register_localizers(register):
                register(MyLocalizer)
        """

    @RegistrySpec("dataset", "locator.data:Dataset")
    def register_datasets(self, register: Callable[..., None]) -> None:
        """Register datasets that turn a name into calibration texts.

        Example::

            @locator.hookimpl
            def register_datasets(register):
                register(MyDataset())
        """

    @RegistrySpec("evaluator", "locator.evaluation:Evaluator")
    def register_evaluators(self, register: Callable[..., None]) -> None:
        """Register evaluators that measure a skill of an in-memory model.

        Example::

            @locator.hookimpl
            def register_evaluators(register):
                register(MyEvaluator())
        """

    @RegistrySpec("model", "locator.models:ModelSource")
    def register_models(self, register: Callable[[Any], None]) -> None:
        """Register models by short name (`locator.ModelSource`): a hub id and, where a
        package installs a local copy, how to find it offline.

        Example::

            from pathlib import Path

            @locator.hookimpl
            def register_models(register):
                register(locator.ModelSource(
                    name="my-model",
                    hub_id="me/my-model",
                    description="My model, Q8 GGUF.",
                    size="120 MB",
                    packages=("my-model-gguf",),
                    find=lambda: Path("/opt/models/my-model.gguf"),
                ))
        """

    @RegistrySpec("statistic", "locator.stats:StatisticKind")
    def register_statistics(self, register: Callable[[Any], None]) -> None:
        """Register statistic kinds (`locator.StatisticKind` instances, whose docstring has an
        example) that methods can declare in their `statistics`; kinds of one corpus are
        collected in one pass.

        Example::

            @locator.hookimpl
            def register_statistics(register):
                register(INPUT_ABS_MAX)
        """

    @RegistrySpec("MLP layout", "locator.architecture:MlpLayout")
    def register_layouts(self, register: Callable[[Any], None]) -> None:
        """Register MLP layouts (`locator.MlpLayout`), so that neuron-level methods find the
        neurons of model families the built-in layouts do not cover.

        Example::

            @locator.hookimpl
            def register_layouts(register):
                register(locator.MlpLayout(
                    name="gpt-j", pre_activation="fc_in", down_projection="fc_out"
                ))
        """

    @hookspec
    def register_commands(self, cli: Any) -> None:
        """Add commands to the ``locator`` click group.

        Example::

            @locator.hookimpl
            def register_commands(cli):
                @cli.command()
                def hello():
                    click.echo("hello")
        """


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin: its entry-point name, distribution, version and implemented hooks."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


_manager: pluggy.PluginManager | None = None
_distributions: dict[str, tuple[str, str]] = {}


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading the entry points on first use."""
    global _manager
    if _manager is None:
        manager = pluggy.PluginManager("locator")
        manager.add_hookspecs(HookSpecs)
        _load_entry_points(manager)
        _manager = manager
    return _manager


def _load_entry_points(manager: pluggy.PluginManager) -> None:
    allowed = os.environ.get(LOAD_PLUGINS_VARIABLE)
    wanted = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if wanted is not None and entry_point.name not in wanted:
            continue
        dist = entry_point.dist
        dist_name, version = (dist.name, dist.version) if dist else ("?", "?")
        try:
            module = entry_point.load()
            manager.register(module, name=entry_point.name)
        except Exception as error:  # one broken plugin must not break the others
            warnings.warn(
                f"locator: plugin {entry_point.name!r} from {dist_name} {version} failed to "
                f"load and was skipped: {type(error).__name__}: {error}",
                stacklevel=2,
            )
            continue
        _distributions[entry_point.name] = (dist_name, version)


def register_commands(cli: Any) -> None:
    """Let every plugin add its commands to the click group `cli`; a plugin whose hook raises
    costs one warning naming it, and the other plugins' commands are still added."""
    manager = plugin_manager()
    for implementation in manager.hook.register_commands.get_hookimpls():
        try:
            _call(implementation, cli=cli)
        except Exception as error:  # one broken plugin must not break every command
            warnings.warn(
                f"locator: plugin {implementation.plugin_name!r} failed in register_commands "
                f"and its commands were skipped: {type(error).__name__}: {error}",
                stacklevel=2,
            )


def _call(implementation: Any, **arguments: Any) -> Any:
    """Call one hook implementation with only the arguments it declares, as pluggy does, so
    that an argument added to a hook breaks no plugin written before it."""
    return implementation.function(**{name: arguments[name] for name in implementation.argnames})


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register a plugin object (module or class instance) in this process, without an entry
    point; useful in notebooks and tests. Registries are rebuilt on next use."""
    plugin_manager().register(plugin, name=name)
    _registries.clear()


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered under `name`; registries are rebuilt on next use."""
    plugin_manager().unregister(name=name)
    _registries.clear()


def list_plugins() -> list[PluginInfo]:
    """The loaded plugins with their distribution, version and implemented hooks."""
    manager = plugin_manager()
    infos = []
    for name, plugin in manager.list_name_plugin():
        hooks = tuple(sorted(caller.name for caller in manager.get_hookcallers(plugin) or []))
        dist_name, version = _distributions.get(name, ("(registered in process)", ""))
        infos.append(PluginInfo(name=name, distribution=dist_name, version=version, hooks=hooks))
    return sorted(infos, key=lambda info: info.name)


class Registry(Generic[T]):
    """Named objects of one kind (localizers, datasets, evaluators), filled by one hook."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._sources: dict[str, str] = {}

    def add(self, name: str, item: T, source: str) -> None:
        """Add `item` under `name`; two plugins claiming one name is an error naming both."""
        if name in self._items:
            raise LocatorError(
                f"{self.kind} {name!r} is registered twice: by plugin {self._sources[name]!r} "
                f"and by plugin {source!r}; uninstall one or rename it."
            )
        self._items[name] = item
        self._sources[name] = source

    def get(self, name: str) -> T:
        """The item named `name`, or an `UnknownNameError` with a did-you-mean."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def source(self, name: str) -> str:
        """The plugin that registered `name`."""
        self.get(name)
        return self._sources[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._items


_registries: dict[str, Registry[Any]] = {}


class RegistrationError(LocatorError):
    """A plugin registered something of the wrong type."""


def _check_type(kind: str, item: Any, expected: type, classes: bool, source: str) -> None:
    """Raise a one-line `RegistrationError` unless `item` is an `expected` (a subclass of it
    when `classes`)."""
    if classes and isinstance(item, type) and issubclass(item, expected):
        return
    if not classes and isinstance(item, expected):
        return
    what = item.__name__ if isinstance(item, type) else f"an instance of {type(item).__name__}"
    if classes and isinstance(item, expected):
        hint = f"register the class itself: register({type(item).__name__})"
    elif classes:
        hint = f"register a subclass of {expected.__module__}.{expected.__name__}"
    elif isinstance(item, type) and issubclass(item, expected):
        hint = f"register an instance: register({item.__name__}(...))"
    else:
        hint = f"register a {expected.__module__}.{expected.__name__} instance"
    raise RegistrationError(f"plugin {source!r} registered {what} as a {kind}; {hint}.")


def registry(hook: str) -> Registry[Any]:
    """The registry filled by hook `hook` (for example ``register_localizers``; see
    `REGISTRIES`), built once.

    Each registered item must be of the registry's expected type, or registering it raises a
    one-line `RegistrationError`. Each plugin's hook runs on its own, so one plugin that raises,
    or registers the wrong type, is skipped with one warning.
    """
    if hook not in _registries:
        spec = REGISTRIES[hook]
        module, _, name = spec.expected.partition(":")
        expected = getattr(importlib.import_module(module), name)
        result: Registry[Any] = Registry(spec.kind)
        caller = getattr(plugin_manager().hook, hook)
        for implementation in caller.get_hookimpls():
            source = implementation.plugin_name

            def register(item: Any, _source: str = source) -> None:
                _check_type(spec.kind, item, expected, spec.classes, _source)
                result.add(item.name, item, _source)

            try:
                _call(implementation, register=register)
            except RegistrationError as error:
                warnings.warn(f"locator: {error} The plugin was skipped.", stacklevel=2)
            except LocatorError:
                raise
            except Exception as error:
                warnings.warn(
                    f"locator: plugin {source!r} failed in {hook} and was skipped: "
                    f"{type(error).__name__}: {error}",
                    stacklevel=2,
                )
        _registries[hook] = result
    return _registries[hook]
