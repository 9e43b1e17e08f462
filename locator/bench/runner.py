"""The grid runner: plan a suite's configurations, share every pass it can, write one part each.

A configuration is one cell of the grid: (model, corpora, num_samples, seed, method, proportion,
factor); it is evaluated on every task of the suite. The plan is the whole grid in a fixed
order; a shard is a contiguous slice of it, so shards are balanced to one configuration and
each keeps most statistics passes to itself. Work is shared wherever the result is the same:

- each model is loaded once and never reloaded: interventions are applied in place and
  restored (`locator.intervene`), and the unedited model is evaluated once per task (the
  baseline, kept in ``_baselines/``, its per-item scores in ``_samples/baseline-*.parquet``);
- each corpus is drawn and passed through the model once per (model, corpus, seed,
  num_samples), collecting the union of the statistic kinds of all methods (cached in
  ``_statistics/``, so a resumed run repeats no pass);
- each method ranks once per (corpora, seed, num_samples) and cuts every proportion from that
  ranking (`Localizer.localize_many`); a matched baseline gets the localization of the method
  it matches, at the same proportion, as its reference.

A configuration whose part file exists is skipped, which makes a killed run resumable: part
files are written atomically after the configuration's last evaluation, just after its per-item
scores (``_samples/<configuration hash>.parquet``). Runs sharing a folder claim each
configuration (and each baseline) before computing it (`results.claim`), so none is computed
twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import groupby
from pathlib import Path
from typing import Any

from locator.bench import results
from locator.bench.suite import CorporaSpec, MethodSpec, Suite, TaskSpec
from locator.data import Corpus
from locator.errors import LocatorError
from locator.models import ModelOptions


@dataclass(frozen=True, kw_only=True)
class Configuration:
    """One cell of the grid. `key` (the configuration hash) and each task's identity name its
    part files (`parts`: task name -> part name); `selection_key` names its localization,
    shared by every factor. `tasks` are the suite's tasks evaluated in this cell."""

    model: ModelOptions
    corpora: CorporaSpec
    num_samples: int
    seed: int
    method: MethodSpec
    proportion: float
    factor: float
    method_config: str
    key: str
    selection_key: str
    tasks: tuple[TaskSpec, ...]

    @property
    def parts(self) -> dict[str, str]:
        """Task name -> the name of the part file holding this cell's rows for it."""
        return {task.name: results.part_name(self.key, task.identity()) for task in self.tasks}

    @property
    def group(self) -> tuple[ModelOptions, int, int]:
        """What one statistics pass per corpus serves: (model, num_samples, seed)."""
        return (self.model, self.num_samples, self.seed)


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """What a run did: grid size, this shard's share, configurations skipped and run."""

    planned: int
    in_shard: int
    skipped: int
    ran: int
    seconds: float
    out: Path
    busy: int = 0
    """Configurations left to another live run sharing the folder (claimed by it)."""


def _method_identity(suite: Suite, method: MethodSpec) -> dict[str, Any]:
    """The method's registered name and full config (defaults filled in), and what it matches."""
    from locator.localizer import config_to_dict

    config = config_to_dict(method.localizer().config)
    identity: dict[str, Any] = {"name": method.name, "config": config}
    if method.match is not None:
        identity["match"] = _method_identity(suite, suite.method(method.match))
    return identity


def plan(suite: Suite) -> list[Configuration]:
    """Every configuration of the suite's grid, in a fixed order (models outermost, factors
    innermost), with its stable hashes."""
    identities = {m.label: _method_identity(suite, m) for m in suite.methods}
    calibration = suite.calibration
    configurations = []
    for model in suite.models:
        for num_samples in suite.num_samples:
            for seed in suite.seeds:
                planned = set()  # (corpora, label): entries a method's own controls make equal
                for entry in suite.corpora:
                    for method in suite.methods:
                        corpora = suite.corpora_of(method, entry)
                        if (corpora, method.label) in planned:
                            continue
                        planned.add((corpora, method.label))
                        config = dict(identities[method.label]["config"])
                        if method.match is not None:  # as the localization records it
                            config["matched_to"] = method.match
                        for proportion in suite.proportions:
                            selection = {
                                "model": model.identity(),
                                "method": identities[method.label],
                                "target": corpora.target,
                                "controls": list(corpora.controls),
                                "num_samples": num_samples,
                                "with_replacement": calibration.with_replacement,
                                "seed": seed,
                                "proportion": proportion,
                                "max_length": calibration.max_length,
                                # only when set, so that older suites keep their hashes
                                **({"chat_template": True} if calibration.chat_template else {}),
                                **({"pack": calibration.pack} if calibration.pack else {}),
                            }
                            for factor in suite.factors:
                                key = {**selection, "factor": factor}
                                tasks = tuple(
                                    task for task in suite.tasks if task.applies(proportion, factor)
                                )
                                configurations.append(
                                    Configuration(
                                        model=model,
                                        corpora=corpora,
                                        num_samples=num_samples,
                                        seed=seed,
                                        method=method,
                                        proportion=proportion,
                                        factor=factor,
                                        method_config=json.dumps(config, sort_keys=True),
                                        key=results.stable_hash(key),
                                        selection_key=results.stable_hash(selection),
                                        tasks=tasks,
                                    )
                                )
    return configurations


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (1 <= i <= n) -> ``(i, n)``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise LocatorError(f"--shard must look like i/n (for example 2/8), got {text!r}.") from None
    if not 1 <= index <= count:
        raise LocatorError(f"--shard {text}: need 1 <= i <= n.")
    return index, count


def shard(configurations: Sequence[Configuration], index: int, count: int) -> list[Configuration]:
    """Shard `index` of `count` (1-based): a contiguous slice of the plan, balanced to one
    configuration, so that the shards together are the plan with nothing twice."""
    total = len(configurations)
    return list(configurations[(index - 1) * total // count : index * total // count])


def manifest(suite: Suite, configurations: Sequence[Configuration]) -> dict[str, Any]:
    """What a results folder records about the grid it holds (``_suite.json``)."""
    return {
        "suite": suite.name,
        "schema": results.SCHEMA_VERSION,
        "grid": results.stable_hash([c.key for c in configurations]),
        "configurations": len(configurations),
        "tasks": [t.identity() for t in suite.tasks],
        "source": suite.path.read_text(encoding="utf-8"),
    }


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    shard_spec: tuple[int, int] = (1, 1),
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> RunSummary:
    """Run the configurations of shard `shard_spec` of `suite` whose part file is not in `out`."""
    from locator.io import check_output_directory

    start = time.perf_counter()
    out = check_output_directory(
        out, owned=results.is_results_folder, what="a results folder", extend=True
    )
    configurations = plan(suite)
    mine = shard(configurations, *shard_spec)
    if not mine:
        echo(
            f"{suite.name}: shard {shard_spec[0]}/{shard_spec[1]} has nothing to do: the grid "
            f"has {len(configurations)} configurations, fewer than {shard_spec[1]} shards."
        )
        return RunSummary(
            planned=len(configurations), in_shard=0, skipped=0, ran=0, seconds=0.0, out=out
        )
    results.check_manifest(out, manifest(suite, configurations))
    done = results.finished(out)
    todo = [c for c in mine if not set(c.parts.values()) <= done]
    where = "" if shard_spec == (1, 1) else f", shard {shard_spec[0]}/{shard_spec[1]}: {len(mine)}"
    echo(
        f"{suite.name}: {len(configurations)} configurations{where}; "
        f"{len(mine) - len(todo)} finished, {len(todo)} to run -> {out}"
    )
    runner = _Run(suite, out, progress)
    if todo:
        runner.run(todo)
    return RunSummary(
        planned=len(configurations),
        in_shard=len(mine),
        skipped=len(mine) - len(todo),
        ran=len(todo) - runner.busy,
        seconds=time.perf_counter() - start,
        out=out,
        busy=runner.busy,
    )


@dataclass
class _Evaluation:
    metrics: dict[str, dict[str, float]]  # task -> metric -> value
    seconds: dict[str, float]  # task -> seconds
    higher_is_better: dict[str, dict[str, bool]]  # task -> metric -> direction, where known
    items: dict[str, list[dict[str, Any]]]  # task -> per-item scores (sample rows less the ids)


@dataclass
class _Run:
    """The state of one run: the suite, the output folder and the progress bar."""

    suite: Suite
    out: Path
    progress: bool
    provenance: dict[str, str | None] = field(default_factory=results.provenance)
    busy: int = 0

    def run(self, todo: list[Configuration]) -> None:
        from tqdm.auto import tqdm

        self._check_models(todo)
        texts = self._corpora(todo)  # before any model: a missing file fails fast
        self.bar = tqdm(total=len(todo), desc="bench", unit="config", disable=not self.progress)
        try:
            for model_spec, configurations in groupby(todo, key=lambda c: c.model):
                self._run_model(model_spec, list(configurations), texts)
        finally:
            self.bar.close()

    def _check_models(self, todo: Iterable[Configuration]) -> None:
        """Every model check `load_model` makes, for every model, before any work."""
        for spec in dict.fromkeys(c.model for c in todo):
            try:
                self.suite.located(spec).check()
            except LocatorError as error:
                raise LocatorError(f"{self.suite.path}: models {spec.path!r}: {error}") from None

    def _corpora(self, todo: Iterable[Configuration]) -> dict[tuple[str, int, int], Corpus]:
        """The calibration corpus of every (dataset, num_samples, seed) the run needs."""
        from locator.data import sample_corpus

        needed = dict.fromkeys(
            (name, c.num_samples, c.seed)
            for c in todo
            for name in (c.corpora.target, *c.corpora.controls)
        )
        from locator.provenance import texts_hash

        texts = {
            (name, num_samples, seed): sample_corpus(
                name,
                num_samples=num_samples,
                seed=seed,
                replace=self.suite.calibration.with_replacement,
                data_dir=self.suite.data_path(),
            )
            for name, num_samples, seed in needed
        }
        for (name, num_samples, seed), drawn in texts.items():
            key = {"dataset": name, "num_samples": num_samples, "seed": seed}
            key["with_replacement"] = self.suite.calibration.with_replacement
            results.check_identity(self.out, "corpus", key, {"sha256": texts_hash(drawn.texts)})
        return texts

    def _run_model(
        self,
        spec: ModelOptions,
        todo: list[Configuration],
        texts: dict[tuple[str, int, int], Corpus],
    ) -> None:
        from locator.cache import model_fingerprint
        from locator.provenance import model_identity

        self.bar.set_postfix_str(f"loading {spec.path}")
        model, tokenizer = self.suite.located(spec).load()
        self.model, self.tokenizer, self.model_spec = model, tokenizer, spec
        self.fingerprint = model_fingerprint(model)
        self.identity = model_identity(model)
        results.check_identity(
            self.out,
            "model",
            {"path": spec.path, "dtype": spec.dtype},
            {"fingerprint": self.identity["fingerprint"]},
        )
        self.baseline = self._baseline(spec)
        for _, group in groupby(todo, key=lambda c: c.group):
            self._run_group(list(group), texts)

    def _texts(self, corpus: Corpus) -> Sequence[str]:
        """The corpus's texts, through the model's chat template if the suite asks for it."""
        from locator.data import render_chat

        return (
            render_chat(self.tokenizer, corpus).texts
            if self.suite.calibration.chat_template
            else corpus.texts
        )

    def _baseline(self, spec: ModelOptions) -> _Evaluation:
        """The unedited model's evaluation per task, read from ``_baselines/`` (metrics) and
        ``_samples/baseline-<hash>.parquet`` (per-item scores) or evaluated once."""
        baseline = _Evaluation(metrics={}, seconds={}, higher_is_better={}, items={})
        for task in self.suite.tasks:
            key = {"model": spec.identity(), "task": task.identity()}
            name = results.stable_hash(key)
            path = self.out / "_baselines" / f"{name}.json"
            samples = f"baseline-{name}"
            while not path.is_file():  # another run may be evaluating it: wait for its file
                if not results.claim(self.out, samples):
                    self.bar.set_postfix_str(f"waiting for another run's baseline {task.name}")
                    time.sleep(1.0)
                    continue
                try:
                    if not path.is_file():
                        self.bar.set_postfix_str(f"baseline {task.name}")
                        evaluation = self._evaluate([task])
                        rows = self._sample_rows("baseline", evaluation.items[task.name])
                        results.write_samples(self.out, samples, rows)  # before the metrics
                        record = {
                            "metrics": evaluation.metrics[task.name],
                            "higher_is_better": evaluation.higher_is_better[task.name],
                            "seconds": evaluation.seconds[task.name],
                        }
                        results.write_json(path, {**key, **record})
                finally:
                    results.release(self.out, samples)
            stored = results.read_json(path)
            baseline.metrics[task.name] = stored["metrics"]
            baseline.seconds[task.name] = 0.0
            baseline.higher_is_better[task.name] = stored.get("higher_is_better", {})
            baseline.items[task.name] = (
                results.read_samples(self.out, samples)
                .select(["task", "metric", "item", "value", "weight"])
                .to_pylist()
                if results.samples_path(self.out, samples).is_file()
                else []
            )
        return baseline

    def _sample_rows(self, config_hash: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per-item score rows of the current model (`SAMPLES_SCHEMA`)."""
        spec = self.model_spec
        return [
            {"config_hash": config_hash, "model": spec.path, "dtype": spec.dtype, **item}
            for item in items
        ]

    def _evaluate(self, tasks: Sequence[TaskSpec]) -> _Evaluation:
        """Evaluate the model as currently edited, one call per task (each task has its own
        limit and options, and its time is recorded), with per-item scores."""
        from locator.evaluation import run_evaluation

        evaluation = _Evaluation(metrics={}, seconds={}, higher_is_better={}, items={})
        for task in tasks:
            start = time.perf_counter()
            request = task.request(
                data_dir=self.suite.data_path(),
                batch_size=self.suite.eval_batch_size,
                log_samples=True,
            )
            output = run_evaluation(self.model, self.tokenizer, request)
            evaluation.seconds[task.name] = time.perf_counter() - start
            evaluation.metrics[task.name] = dict(_numbers(output.metrics[task.name]))
            evaluation.higher_is_better[task.name] = output.higher_is_better.get(task.name, {})
            evaluation.items[task.name] = [
                {
                    "task": item.task,
                    "metric": item.metric,
                    "item": item.item,
                    "value": item.value,
                    "weight": item.weight,
                }
                for item in output.items
            ]
        return evaluation

    def _run_group(
        self, todo: list[Configuration], texts: dict[tuple[str, int, int], Corpus]
    ) -> None:
        """All configurations of one (model, num_samples, seed): one pass per corpus."""
        from locator.cache import cached_statistics
        from locator.localizer import statistic_kinds
        from locator.provenance import with_provenance

        first = todo[0]
        methods = _needed_methods(self.suite, todo)
        localizers = {m.label: m.localizer() for m in methods}
        # A corpus pays for the kinds of every method as a target, and as a control only for
        # those of methods that read controls (so a target-only gradient method costs controls
        # no backward pass).
        every = statistic_kinds(localizers.values())
        kinds = {configuration.corpora.target: every for configuration in todo}
        readers = statistic_kinds(m for m in localizers.values() if m.uses_controls)
        for configuration in todo:
            for name in configuration.corpora.controls:
                kinds[name] = kinds.get(name, frozenset()) | readers
        statistics, seconds = {}, {}
        for name in dict.fromkeys(n for c in todo for n in (c.corpora.target, *c.corpora.controls)):
            self.bar.set_postfix_str(f"statistics {name} n={first.num_samples} seed={first.seed}")
            start = time.perf_counter()
            statistics[name] = cached_statistics(
                self.model,
                self.tokenizer,
                self._texts(texts[(name, first.num_samples, first.seed)]),
                kinds=kinds[name],
                cache_dir=self.out / "_statistics",
                batch_size=self.suite.calibration.batch_size,
                max_length=self.suite.calibration.max_length,
                pack=self.suite.calibration.pack,
                corpus=name,
                progress=False,
                model_key=self.fingerprint,
            )
            seconds[name] = time.perf_counter() - start
        # Methods with their own controls interleave corpora in the plan: group them, so each
        # method ranks once per corpora (a matched baseline's reference included).
        appears = {corpora: i for i, corpora in reversed(list(enumerate(c.corpora for c in todo)))}
        todo = sorted(todo, key=lambda c: appears[c.corpora])
        for corpora, configurations in groupby(todo, key=lambda c: c.corpora):
            batch = list(configurations)
            names = (corpora.target, *corpora.controls)
            localized = self._localize(corpora, batch, statistics, localizers)
            used = [
                (name, self._texts(texts[(name, first.num_samples, first.seed)])) for name in names
            ]
            for configuration in batch:
                localization, localize_seconds = localized[
                    (configuration.method.label, configuration.proportion)
                ]
                if not localization.provenance:
                    localization = with_provenance(
                        localization,
                        model=self.identity,
                        corpora=used if localization.controls else used[:1],
                        max_length=self.suite.calibration.max_length,
                    )
                timings = {
                    "statistics_seconds": sum(seconds[name] for name in names),
                    "localization_seconds": localize_seconds,
                }
                self._run_configuration(configuration, localization, timings)

    def _localize(
        self,
        corpora: CorporaSpec,
        todo: list[Configuration],
        statistics: dict[str, Any],
        localizers: dict[str, Any],
    ) -> dict[tuple[str, float], tuple[Any, float]]:
        """(label, proportion) -> (localization, seconds of the ranking that produced it), for
        every method the configurations need, references before the baselines matched to them."""
        from locator.localizer import build_context

        seed = todo[0].seed
        target = statistics[corpora.target]
        controls = [statistics[name] for name in corpora.controls]
        contexts = {
            head: build_context(self.model, target, controls, seed=seed, head=head)
            for head in {localizers[label].scores_head for label in localizers}
        }
        wanted: dict[str, set[float]] = {}
        for configuration in todo:
            method = configuration.method
            wanted.setdefault(method.label, set()).add(configuration.proportion)
            if method.match is not None:
                wanted.setdefault(method.match, set()).add(configuration.proportion)
        localized: dict[tuple[str, float], tuple[Any, float]] = {}
        ordered = sorted(wanted, key=lambda label: self.suite.method(label).match is not None)
        for label in ordered:
            method = self.suite.method(label)
            proportions = sorted(wanted[label])
            self.bar.set_postfix_str(f"localize {label}")
            if method.match is None:
                start = time.perf_counter()
                context = contexts[localizers[label].scores_head]
                found = localizers[label].localize_many(context, proportions)
                seconds = time.perf_counter() - start
                localized.update(
                    {(label, p): (f, seconds) for p, f in zip(proportions, found, strict=True)}
                )
                continue
            for proportion in proportions:
                reference = localized[(method.match, proportion)][0]
                start = time.perf_counter()
                matched_context = build_context(
                    self.model,
                    target,
                    controls,
                    seed=seed,
                    reference=reference,
                    reference_label=method.match,
                    head=localizers[label].scores_head,
                )
                found = localizers[label].localize_many(matched_context, [proportion])[0]
                localized[(label, proportion)] = (found, time.perf_counter() - start)
        return localized

    def _run_configuration(
        self, configuration: Configuration, localization: Any, timings: dict[str, float]
    ) -> None:
        """Claim the configuration, save the selection, evaluate the edited model on the tasks
        whose part file is missing, write them; leave it to another run sharing the folder that
        claimed it first."""
        if not results.claim(self.out, configuration.key):
            self.busy += 1
            self.bar.update(1)
            return
        try:
            parts = configuration.parts
            tasks = [
                task
                for task in configuration.tasks
                if not results.part_path(self.out, parts[task.name]).is_file()  # done meanwhile?
            ]
            if tasks:
                self._evaluate_configuration(configuration, tasks, localization, timings)
        finally:
            results.release(self.out, configuration.key)
        self.bar.update(1)

    def _evaluate_configuration(
        self,
        configuration: Configuration,
        tasks: list[TaskSpec],
        localization: Any,
        timings: dict[str, float],
    ) -> None:
        import locator

        selection = Path("_selections") / f"{configuration.selection_key}.safetensors"
        if not (self.out / selection).is_file():
            localization.save(self.out / selection)
        label = configuration.method.label
        if localization.count() == 0:
            # Nothing selected: the model is the unedited one, so its metrics are the baseline's.
            evaluation = self.baseline
        else:
            self.bar.set_postfix_str(
                f"evaluate {label} p={configuration.proportion:g} x{configuration.factor:g}"
            )
            with locator.intervene(self.model, localization, configuration.factor):
                evaluation = self._evaluate(tasks)
        now = datetime.now(timezone.utc)
        for task in tasks:
            part = configuration.parts[task.name]
            results.write_samples(  # before the part file, which marks the task done
                self.out, part, self._sample_rows(configuration.key, evaluation.items[task.name])
            )
            rows = [
                {
                    "suite": self.suite.name,
                    "model": configuration.model.path,
                    "dtype": configuration.model.dtype,
                    "model_revision": self.identity["revision"],
                    "model_fingerprint": self.identity["fingerprint"],
                    "method": configuration.method.name,
                    "label": label,
                    "method_config": configuration.method_config,
                    "target": configuration.corpora.target,
                    "controls": ",".join(configuration.corpora.controls),
                    "proportion": configuration.proportion,
                    "factor": configuration.factor,
                    "seed": configuration.seed,
                    "num_samples": configuration.num_samples,
                    "task": task.name,
                    "limit": task.limit,
                    "metric": metric,
                    "value": value,
                    "baseline_value": self.baseline.metrics[task.name].get(metric),
                    "higher_is_better": (
                        evaluation.higher_is_better[task.name]
                        or self.baseline.higher_is_better[task.name]
                    ).get(metric),
                    "selected_count": localization.count(),
                    "selected_fraction": localization.fraction(),
                    "scored_count": localization.numel(),
                    "selection": selection.as_posix(),
                    **timings,
                    "evaluation_seconds": evaluation.seconds[task.name],
                    "config_hash": configuration.key,
                    **self.provenance,
                    "created_at": now,
                }
                for metric, value in evaluation.metrics[task.name].items()
            ]
            results.write_part(self.out, part, rows)


def _needed_methods(suite: Suite, todo: Iterable[Configuration]) -> list[MethodSpec]:
    """The methods the configurations use, with the methods their matched baselines copy."""
    labels = set()
    for configuration in todo:
        labels.add(configuration.method.label)
        if configuration.method.match is not None:
            labels.add(configuration.method.match)
    return [m for m in suite.methods if m.label in labels]


def _numbers(metrics: Any) -> Iterable[tuple[str, float]]:
    """The numeric metrics of one task's result, by name (anything else is left out)."""
    for name in sorted(metrics):
        value = metrics[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, float(value)
