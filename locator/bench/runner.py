"""Running a plan: a `Bench` loads each model once, shares every pass it can, writes one part each.

`run_suite` (what ``locator bench`` calls) plans the grid (`locator.bench.plan`), takes this
shard's configurations whose part files are missing and hands them to a `Bench`, which runs them
step by step. Work is shared wherever the result is the same:

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
configuration (and each baseline) before computing it (`locator.bench.claims`), so none is
computed twice; a run waits for the configurations others hold while their heartbeat is fresh,
and takes over those whose holder died, so it never ends with a configuration left to nobody.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import groupby
from pathlib import Path
from typing import Any

from locator.bench import claims, results
from locator.bench.plan import (
    Configuration,
    manifest,
    parse_shard,
    plan,
    rankings,
    shard,
    stable_hash,
)
from locator.bench.suite import CorporaSpec, Suite, TaskSpec
from locator.data import Corpus
from locator.errors import LocatorError
from locator.models import ModelOptions, check_calibration

__all__ = ["Bench", "RunSummary", "parse_shard", "plan", "run_suite", "shard"]

POLL_SECONDS = 2.0
"""How often a run waiting for another's claimed work looks again."""


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """What a run did: grid size, this shard's share, configurations finished before it
    started (`skipped`), computed by it (`ran`) and by another run sharing the folder while it
    waited (`busy`); together they are the whole shard."""

    planned: int
    in_shard: int
    skipped: int
    ran: int
    seconds: float
    out: Path
    busy: int = 0
    """Configurations another run sharing the folder computed (this one waited for them)."""

    def table(self) -> str:
        """`locator.bench.report.summary_table` of every result in `out` (``""`` while none)."""
        from locator.bench.report import summary_table

        done = results.finished(self.out)
        return summary_table(results.read_results(self.out).to_pylist()) if done else ""


def run_suite(
    suite: Suite,
    out: str | Path,
    *,
    shard_spec: tuple[int, int] = (1, 1),
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> RunSummary:
    """Run the configurations of shard `shard_spec` of `suite` whose part file is not in `out`
    (a ground-truth suite: `locator.bench.ground_truth.run_ground_truth`)."""
    from locator.io import check_output_directory

    if suite.ground_truth is not None:
        from locator.bench.ground_truth import run_ground_truth

        if shard_spec != (1, 1):
            raise LocatorError(
                "a ground-truth suite runs whole (its plantings in parallel); drop --shard."
            )
        return run_ground_truth(suite, Path(out), progress=progress, echo=echo)
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
    results.check_manifest(
        out, manifest(suite, configurations, suite.path.read_text(encoding="utf-8"))
    )
    done = results.finished(out)
    # A configuration whose selection is missing (deleted as damaged) runs again to save it.
    todo = [c for c in mine if not c.finished(done) or not (out / c.selection).is_file()]
    where = "" if shard_spec == (1, 1) else f", shard {shard_spec[0]}/{shard_spec[1]}: {len(mine)}"
    echo(
        f"{suite.name}: {len(configurations)} configurations{where}; "
        f"{len(mine) - len(todo)} finished, {len(todo)} to run -> {out}"
    )
    bench = Bench(suite, out, progress=progress, echo=echo)
    if todo:
        bench.run(todo)
        bench.wait_for_others()
    return RunSummary(
        planned=len(configurations),
        in_shard=len(mine),
        skipped=len(mine) - len(todo),
        ran=bench.ran,
        seconds=time.perf_counter() - start,
        out=out,
        busy=len(todo) - bench.ran,
    )


@dataclass(frozen=True, kw_only=True)
class _Scores:
    """One task's evaluation of the model as it stood: numeric metrics, their directions where
    known, per-item scores (`results.Sample` fields less the ids) and the seconds it took."""

    metrics: dict[str, float]
    higher_is_better: dict[str, bool]
    items: list[dict[str, Any]]
    seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class _Pass:
    """One corpus's statistics pass: the texts it read, their token rows (a method that runs the
    model reads them too), its statistics and the seconds it took."""

    texts: Sequence[str]
    rows: list[list[int]]
    statistics: Any
    seconds: float


Drawn = dict[tuple[str, int, int], Corpus]
"""Calibration corpora by (dataset, num_samples, seed)."""


def check_models(suite: Suite, todo: Iterable[Configuration]) -> None:
    """Every model check `load_model` makes, for every model of `todo`, before any work."""
    for spec in dict.fromkeys(c.model for c in todo):
        try:
            suite.located(spec).check()
        except LocatorError as error:
            raise LocatorError(f"{suite.path}: models {spec.path!r}: {error}") from None


def draw(suite: Suite, out: Path, todo: Iterable[Configuration]) -> Drawn:
    """The calibration corpus of every (dataset, num_samples, seed) `todo` needs, checked
    against the texts the results folder `out`'s earlier results were computed from."""
    from locator.data import sample_corpus
    from locator.provenance import texts_hash

    replace = suite.calibration.with_replacement
    needed = dict.fromkeys((n, c.num_samples, c.seed) for c in todo for n in c.corpora.names)
    texts = {
        (name, num_samples, seed): sample_corpus(
            name,
            num_samples=num_samples,
            seed=seed,
            replace=replace,
            data_dir=suite.data_path(),
        )
        for name, num_samples, seed in needed
    }
    for (name, num_samples, seed), drawn in texts.items():
        key = {"dataset": name, "num_samples": num_samples, "seed": seed}
        key["with_replacement"] = replace
        results.check_identity(out, "corpus", key, {"sha256": texts_hash(drawn.texts)})
    return texts


class Bench:
    """One run of planned configurations into the results folder `out`: `run` computes them,
    leaving those another run sharing the folder claimed first (`left`) to `wait_for_others`.
    Its steps `load`, `localized`, `evaluate` and `rows` also serve a ground-truth suite
    (`locator.bench.ground_truth`).

    The state it carries: the versions written into every row, the configurations it computed
    (`ran`), the progress `bar`, and, once `load` has run, the model, its identity and its
    baseline (each task's scores unedited)."""

    def __init__(
        self,
        suite: Suite,
        out: Path,
        *,
        progress: bool = True,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.suite, self.out, self.progress, self.echo = suite, out, progress, echo
        self.provenance: dict[str, Any] = results.provenance()  # the versions in every row
        self.ran = 0
        self.left: list[Configuration] = []
        self._said = ""

    def run(self, todo: list[Configuration]) -> None:
        """Check the models, corpora and calibration before any work, then run the
        configurations model by model, one statistics pass per corpus and (model,
        num_samples, seed)."""
        from tqdm.auto import tqdm

        check_models(self.suite, todo)
        drawn = draw(self.suite, self.out, todo)  # before any model: a missing file fails fast
        for c in {(c.model, c.corpora, c.num_samples, c.seed): c for c in todo}.values():
            given = [drawn[(name, c.num_samples, c.seed)] for name in c.corpora.names]
            check_calibration(self.suite.located(c.model), given, self.suite.calibration)
        self.bar = tqdm(total=len(todo), desc="bench", unit="config", disable=not self.progress)
        try:
            for spec, configurations in groupby(todo, key=lambda c: c.model):
                self.load(spec)
                for _, group in groupby(configurations, key=lambda c: c.group):
                    for configuration, localization, timings in self.localized(list(group), drawn):
                        self._run_configuration(configuration, localization, timings)
        finally:
            self.bar.close()

    def wait_for_others(self) -> None:
        """Wait for the configurations another run claimed (`left`) until their part files
        exist; one whose claim went stale (its holder died, on any host) or was released
        unfinished is taken over and computed here."""
        while self.left:
            done = results.finished(self.out)
            pending = [c for c in self.left if not c.finished(done)]
            holders = {c.key: claims.holder(self.out, c.key) for c in pending}
            free = [c for c in pending if (h := holders[c.key]) is None or claims.is_stale(h)]
            self.left = [c for c in pending if c not in free]
            if free:
                self.run(free)  # what is claimed again meanwhile goes back to `left`
            elif self.left:
                ages = [h for c in self.left if (h := holders[c.key]) is not None]
                self._waiting(f"{len(self.left)} configuration(s)", min(ages, key=lambda h: h.age))
                time.sleep(POLL_SECONDS)

    def _waiting(self, what: str, found: claims.Holder | None) -> None:
        """Say, once per thing waited for, what this run waits for and whose claim holds it."""
        who = "a claim just released" if found is None else found.describe()
        said = f"waiting for {what} claimed by another run sharing {str(self.out)!r}"
        if said != self._said:
            self._said = said
            self.echo(
                f"{said} ({who}); a claim is taken over once its heartbeat is older than "
                f"{claims.STALE_SECONDS:.0f} s."
            )

    def load(self, spec: ModelOptions) -> None:
        """Load the model (checked against the weights the folder's results came from) and
        its baseline."""
        from locator.cache import model_fingerprint
        from locator.provenance import model_identity
        from locator.rows import model_positions

        self.bar.set_postfix_str(f"loading {spec.path}")
        self.model, self.tokenizer = self.suite.located(spec).load()
        self.spec = spec
        self.fingerprint = model_fingerprint(self.model)
        self.identity = model_identity(self.model)
        self.positions = model_positions(self.model)
        results.check_identity(
            self.out,
            "model",
            {"path": spec.path, "dtype": spec.dtype},
            {"fingerprint": self.identity["fingerprint"]},
        )
        self.baseline = {task.name: self._baseline(task) for task in self.suite.tasks}

    def _baseline(self, task: TaskSpec) -> _Scores:
        """The unedited model's scores on `task`, read from ``_baselines/`` (metrics) and
        ``_samples/baseline-<hash>.parquet`` (per-item scores) or evaluated once (again when
        either file is missing or damaged)."""
        key = {"model": self.spec.identity(), "task": task.identity()}
        name = stable_hash(key)
        while (stored := _stored_baseline(self.out, name)) is None:
            held = claims.claim(self.out, f"baseline-{name}")
            if held is None:  # another run is evaluating it: wait for its files
                found = claims.holder(self.out, f"baseline-{name}")
                self._waiting(f"the baseline of {task.name}", found)
                time.sleep(POLL_SECONDS)
                continue
            with held:
                if _stored_baseline(self.out, name) is None:
                    self.bar.set_postfix_str(f"baseline {task.name}")
                    scores = self.evaluate(task)
                    self._write_samples(f"baseline-{name}", "baseline", scores)  # before metrics
                    record = {
                        "metrics": scores.metrics,
                        "higher_is_better": scores.higher_is_better,
                        "seconds": scores.seconds,
                    }
                    results.write_json(self.out / "_baselines" / f"{name}.json", {**key, **record})
        return stored

    def evaluate(self, task: TaskSpec) -> _Scores:
        """Evaluate the model as currently edited on one task (each task has its own limit and
        options, and its time is recorded), with per-item scores."""
        from locator.evaluation import run_evaluation

        start = time.perf_counter()
        request = task.request(
            data_dir=self.suite.data_path(), batch_size=self.suite.eval_batch_size, log_samples=True
        )
        output = run_evaluation(self.model, self.tokenizer, request)
        return _Scores(
            metrics=dict(_numbers(output.metrics[task.name])),
            higher_is_better=output.higher_is_better.get(task.name, {}),
            items=[dataclasses.asdict(item) for item in output.items],
            seconds=time.perf_counter() - start,
        )

    def _write_samples(self, name: str, config_hash: str, scores: _Scores) -> None:
        """Write the per-item scores of the current model as ``_samples/<name>.parquet``."""
        spec = self.spec
        rows = [
            results.Sample(config_hash=config_hash, model=spec.path, dtype=spec.dtype, **item)
            for item in scores.items
        ]
        results.write_samples(self.out, name, rows)

    def localized(
        self, todo: list[Configuration], drawn: Drawn
    ) -> Iterator[tuple[Configuration, Any, dict[str, float]]]:
        """Each configuration of one (model, num_samples, seed) with its localization and the
        seconds its statistics and its ranking took: one pass per corpus, one ranking per
        method and corpora (a ground-truth suite scores them instead of evaluating each)."""
        from locator.provenance import with_provenance

        localizers = {
            label: self.suite.method(label).localizer() for label in rankings(self.suite, todo)
        }
        passes = self._passes(todo, drawn, localizers)
        # Methods with their own controls interleave corpora in the plan: group them, so each
        # method ranks once per corpora (a matched baseline's reference included).
        batches: dict[CorporaSpec, list[Configuration]] = {}
        for configuration in todo:
            batches.setdefault(configuration.corpora, []).append(configuration)
        for corpora, batch in batches.items():
            found = self._localize(corpora, batch, passes, localizers)
            used = [(name, passes[name].texts) for name in corpora.names]
            statistics_seconds = sum(passes[name].seconds for name in corpora.names)
            for configuration in batch:
                localization, seconds = found[
                    (configuration.method.label, configuration.proportion)
                ]
                if not localization.provenance:
                    localization = with_provenance(
                        localization,
                        model=self.identity,
                        corpora=used if localization.controls else used[:1],
                        calibration=self.suite.calibration,
                        positions=self.positions,
                    )
                timings = {
                    "statistics_seconds": statistics_seconds,
                    "localization_seconds": seconds,
                }
                yield configuration, localization, timings

    def _passes(
        self, todo: list[Configuration], drawn: Drawn, localizers: dict[str, Any]
    ) -> dict[str, _Pass]:
        """One statistics pass per corpus of one (model, num_samples, seed), by corpus name.
        A corpus pays for the kinds of every method as a target, and as a control only for
        those of methods that read controls (so a target-only gradient method costs controls
        no backward pass)."""
        from locator.cache import cached_statistics
        from locator.data import render_chat
        from locator.localizer import statistic_kinds
        from locator.rows import corpus_rows

        every = statistic_kinds(localizers.values())
        readers = statistic_kinds(m for m in localizers.values() if m.uses_controls)
        targets = {c.corpora.target for c in todo}
        calibration, num_samples, seed = self.suite.calibration, todo[0].num_samples, todo[0].seed
        passes = {}
        for name in dict.fromkeys(n for c in todo for n in c.corpora.names):
            self.bar.set_postfix_str(f"statistics {name} n={num_samples} seed={seed}")
            start = time.perf_counter()
            corpus = drawn[(name, num_samples, seed)]
            read = (
                render_chat(self.tokenizer, corpus).texts
                if calibration.chat_template
                else corpus.texts
            )
            rows = corpus_rows(self.tokenizer, read, calibration, name, self.positions)
            statistics = cached_statistics(
                self.model,
                self.tokenizer,
                read,
                rows,
                kinds=every if name in targets else readers,
                cache_dir=self.out / "_statistics",
                batch_size=calibration.batch_size,
                corpus=name,
                progress=False,
                model_key=self.fingerprint,
            )
            seconds = time.perf_counter() - start
            passes[name] = _Pass(texts=read, rows=rows, statistics=statistics, seconds=seconds)
        return passes

    def _localize(
        self,
        corpora: CorporaSpec,
        todo: list[Configuration],
        passes: dict[str, _Pass],
        localizers: dict[str, Any],
    ) -> dict[tuple[str, float], tuple[Any, float]]:
        """(label, proportion) -> (localization, seconds of the ranking that produced it), for
        every method the configurations on `corpora` need (`locator.bench.plan.rankings`): a
        method ranks once and is cut at all its proportions, a matched baseline copies each
        cut of its reference."""
        from locator.localizer import build_context, run_method
        from locator.runs import ModelRunner

        seed = todo[0].seed
        target = passes[corpora.target].statistics
        controls = [passes[name].statistics for name in corpora.controls]
        contexts = {
            head: build_context(self.model, target, controls, seed=seed, head=head)
            for head in {localizer.scores_head for localizer in localizers.values()}
        }
        found: dict[tuple[str, float], tuple[Any, float]] = {}
        for label, proportions in rankings(self.suite, todo).items():
            localizer, match = localizers[label], self.suite.method(label).match
            self.bar.set_postfix_str(f"localize {label}")
            for cut in [proportions] if match is None else [[p] for p in proportions]:
                start = time.perf_counter()
                context = contexts[localizer.scores_head]
                if match is not None:
                    context = build_context(
                        self.model,
                        target,
                        controls,
                        seed=seed,
                        reference=found[(match, cut[0])][0],
                        reference_label=match,
                        head=localizer.scores_head,
                    )
                elif localizer.runs_model:
                    used = [(name, passes[name].rows) for name in corpora.names]
                    batch_size = self.suite.calibration.batch_size
                    runner = ModelRunner(self.model, used, batch_size, seed=seed, progress=False)
                    context = dataclasses.replace(context, runner=runner)
                made = run_method(self.model, localizer, context, cut)
                seconds = time.perf_counter() - start
                found.update({(label, p): (f, seconds) for p, f in zip(cut, made, strict=True)})
        return found

    def save_selection(self, configuration: Configuration, localization: Any) -> Path:
        """Save `configuration`'s localization in ``_selections/`` unless it is there (it may be
        missing, or deleted as damaged); its path in the folder, the rows' ``selection``."""
        selection = Path(configuration.selection)
        if not (self.out / selection).is_file():
            localization.save(results.slot(self.out / selection), overwrite=True)
        return selection

    def _run_configuration(
        self, configuration: Configuration, localization: Any, timings: dict[str, float]
    ) -> None:
        """Claim the configuration, save the selection, evaluate the edited model on the tasks
        whose part file is missing, write them; leave it to another run sharing the folder that
        claimed it first."""
        import locator

        held = claims.claim(self.out, configuration.key)
        if held is None:
            self.left.append(configuration)  # see `wait_for_others`
            return
        with held:
            parts = configuration.parts
            selection = self.save_selection(configuration, localization)
            tasks = [
                task
                for task in configuration.tasks
                if not results.part_path(self.out, parts[task.name]).is_file()  # done meanwhile?
            ]
            if tasks:
                if localization.count() == 0:
                    # Nothing selected: the model is the unedited one, its scores the baseline's.
                    scores = self.baseline
                else:
                    self.bar.set_postfix_str(
                        f"evaluate {configuration.method.label} "
                        f"p={configuration.proportion:g} x{configuration.factor:g}"
                    )
                    with locator.intervene(self.model, localization, configuration.factor):
                        scores = {task.name: self.evaluate(task) for task in tasks}
                for task in tasks:
                    # The per-item scores first: the part file marks the task done.
                    self._write_samples(parts[task.name], configuration.key, scores[task.name])
                    rows = self.rows(configuration, task, localization, selection, timings, scores)
                    results.write_part(self.out, parts[task.name], rows)
                self.ran += 1
        self.bar.update(1)

    def rows(
        self,
        configuration: Configuration,
        task: TaskSpec,
        localization: Any,
        selection: Path,
        timings: dict[str, float],
        scores: dict[str, _Scores],
    ) -> list[results.Row]:
        """The result rows of one configuration on one task: one per metric."""
        baseline, scored = self.baseline[task.name], scores[task.name]
        now = datetime.now(timezone.utc)
        return [
            results.Row(
                suite=self.suite.name,
                model=configuration.model.path,
                dtype=configuration.model.dtype,
                model_revision=self.identity["revision"],
                model_fingerprint=self.identity["fingerprint"],
                method=configuration.method.name,
                label=configuration.method.label,
                method_config=configuration.method_config,
                target=configuration.corpora.target,
                controls=",".join(configuration.corpora.controls),
                proportion=configuration.proportion,
                factor=configuration.factor,
                seed=configuration.seed,
                num_samples=configuration.num_samples,
                task=task.name,
                limit=task.limit,
                metric=metric,
                value=value,
                baseline_value=baseline.metrics.get(metric),
                higher_is_better=(scored.higher_is_better or baseline.higher_is_better).get(metric),
                selected_count=localization.count(),
                selected_fraction=localization.fraction(),
                scored_count=localization.numel(),
                selection=selection.as_posix(),
                statistics_seconds=timings["statistics_seconds"],
                localization_seconds=timings["localization_seconds"],
                evaluation_seconds=scored.seconds,
                config_hash=configuration.key,
                **self.provenance,
                created_at=now,
            )
            for metric, value in scored.metrics.items()
        ]


def _stored_baseline(out: Path, name: str) -> _Scores | None:
    """The baseline kept as ``_baselines/<name>.json`` with its per-item scores
    ``_samples/baseline-<name>.parquet``, or None when either is missing, damaged or not what
    locator writes there."""
    try:
        stored = results.read_record(out / "_baselines" / f"{name}.json", "")
    except LocatorError:
        return None
    metrics, directions = stored.get("metrics"), stored.get("higher_is_better", {})
    if not (
        isinstance(metrics, dict)
        and isinstance(directions, dict)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())
    ):
        return None
    table = results.read_samples(out, f"baseline-{name}")
    if table is None:
        return None
    items = table.select(["task", "metric", "item", "value", "weight"]).to_pylist()
    return _Scores(metrics=metrics, higher_is_better=directions, items=items)


def _numbers(metrics: Any) -> Iterable[tuple[str, float]]:
    """The numeric metrics of one task's result, by name (anything else is left out)."""
    for name in sorted(metrics):
        value = metrics[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, float(value)
