"""The built-in two-skill testbed as plugins: its corpora, its evaluation tasks and
``locator toy train``, ``locator toy plant`` and ``locator toy score`` (the ground-truth
suite, ``benchmarks/ground-truth.toml``, runs every method on planted models:
`locator.bench.ground_truth`).

Corpora ``toy-arithmetic`` (every problem with its answer, ``"12 + 7 = 19"``) and
``toy-language`` (a fixed pool of grammar sentences) feed localization; tasks of the same names
measure the skills: ``toy-arithmetic`` (``exact_match`` of greedy answers, 0-1) and
``toy-language`` (``loss``: mean next-token loss in nats at the scored positions, whose optimum
is known exactly; ``grammatical``: the rate of grammatical argmax next words). The planted
skill of `locator.toy.plant` (``a big b = max(a, b)``) is the corpus and task ``toy-planted``
(``exact_match``); only a planted model has it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

import locator
from locator.toy.data import arithmetic_problems, language_texts
from locator.toy.plant import (
    PLANTING_FILE,
    PlantingSettings,
    evaluate_planted,
    planted_problems,
    score_files,
)
from locator.toy.plant import plant as plant_skill

LANGUAGE_POOL = 10_000
"""Sentences in the toy-language calibration pool (drawn once from a fixed seed)."""


@dataclass(frozen=True, kw_only=True)
class ToyDataset(locator.Dataset):
    """A corpus of the testbed: generated texts in one split, ``train`` (`origin` says what
    generates them, for ``locator datasets``), measured by the task of the same name."""

    name: str
    description: str
    origin: str
    texts: Callable[[], list[str]]
    splits = ("train",)

    @property
    def task(self) -> str:  # type: ignore[override]
        """The task of the same name."""
        return self.name

    def source(self) -> str:
        """What generates the texts."""
        return self.origin

    def records(self, split: str, data_dir: Path | None) -> Sequence[locator.Record]:
        """The texts, in a fixed order."""
        return [{"text": text} for text in self.texts()]

    def format(self, record: locator.Record) -> str:
        """The text."""
        return str(record["text"])


DATASETS = (
    ToyDataset(
        name="toy-arithmetic",
        description="Toy testbed: a+b, a-b (0-19) and a*b (0-9) with answers, '12 + 7 = 19'.",
        origin="generated (locator.toy.data)",
        texts=lambda: [problem.text for problem in arithmetic_problems()],
    ),
    ToyDataset(
        name="toy-language",
        description=(
            "Toy testbed: grammar sentences with number agreement, '3 tiny cats see a dog .'"
        ),
        origin=f"generated (locator.toy.data), a pool of {LANGUAGE_POOL:,} sentences",
        texts=lambda: language_texts(LANGUAGE_POOL, "toy-language-pool"),
    ),
    ToyDataset(
        name="toy-planted",
        description="Toy testbed, planted skill: 'a big b = max(a, b)' (0-19), '12 big 7 = 12'.",
        origin="generated (locator.toy.plant)",
        texts=lambda: [problem.text for problem in planted_problems()],
    ),
)
"""The toy corpora: every arithmetic problem with its answer (710), a fixed pool of sentences
(independent of the evaluation sentences), every planted problem with its answer (400: the
skill `locator toy plant` teaches)."""


class ToyEvaluator(locator.Evaluator):
    """The toy testbed's two skills and the planted one, measured on the in-memory model."""

    name = "toy"
    tasks = ("toy-arithmetic", "toy-language", "toy-planted")

    def evaluate(
        self, model: Any, tokenizer: Any, request: locator.EvaluationRequest
    ) -> locator.Results:
        """Run each toy task (batched; its fixed test needs no data, few-shot examples, chat
        template or generation cap, so those options do not apply)."""
        from locator.toy.evaluate import TASKS

        run = {**TASKS, "toy-planted": evaluate_planted}
        batch_size = request.batch_size if isinstance(request.batch_size, int) else 256
        return {
            task: run[task](model, tokenizer, limit=request.limit, batch_size=max(batch_size, 64))
            for task in request.tasks
        }


@locator.hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    """Register the toy corpora."""
    for dataset in DATASETS:
        register(dataset)


@locator.hookimpl
def register_evaluators(register):  # type: ignore[no-untyped-def]
    """Register the toy tasks."""
    register(ToyEvaluator())


@locator.hookimpl
def register_commands(cli):  # type: ignore[no-untyped-def]
    """Add ``locator toy train``, ``plant`` and ``score``."""

    @cli.group()
    def toy() -> None:
        """The built-in two-skill testbed."""

    @toy.command()
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder.")
    @click.option("--seed", default=0, show_default=True, type=int)
    @click.option("--steps", default=1000, show_default=True, type=int, help="At least 1.")
    @click.option("--force", is_flag=True, help="Replace a toy model folder this command wrote.")
    def train(out: str, seed: int, steps: int, force: bool) -> None:
        """Train the toy model from a seed.

        Seed 0 reproduces the shipped checkpoint byte for byte on the same torch version and
        CPU instruction set; another CPU gives a model of the same quality, not the same
        weights (see locator/toy/README.md). An existing folder is never overwritten unless
        it is a toy model folder and --force is given.
        """
        from locator.toy.train import main

        main(["--out", out, "--seed", str(seed), "--steps", str(steps)] + ["--force"] * force)

    @toy.command()
    @locator.click_options(PlantingSettings, "settings")
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder.")
    @click.option(
        "--base",
        type=click.Path(file_okay=False),
        help="Toy model to plant into (default shipped).",
    )
    @click.option("--force", is_flag=True, help="Replace a planted model folder this wrote.")
    def plant(settings: PlantingSettings, out: str, base: str | None, force: bool) -> None:
        """Plant the skill 'a big b = max(a, b)' into a seeded set S of the toy model's
        parameters, every other weight bit-identical (see locator/toy/plant.py).

        Writes the planted checkpoint, S as ground-truth.safetensors (a localization of level
        parameter or neuron) and planting.json (settings, seed, accuracies before and after).
        """
        import json

        folder = plant_skill(out, settings, base=base, force=force)
        record = json.loads((folder / PLANTING_FILE).read_text())
        before, after = record["before"], record["after"]
        click.echo(
            f"planted {record['size']:,} entries into {folder} in {record['wall_seconds']} s: "
            f"planted skill {before['planted']:.3f} -> {after['planted']:.3f}, arithmetic "
            f"{before['arithmetic']:.3f} -> {after['arithmetic']:.3f}, language loss "
            f"{before['language_loss']:.4f} -> {after['language_loss']:.4f}"
        )

    @toy.command()
    @click.option(
        "--planted", required=True, type=click.Path(file_okay=False), help="Planted model folder."
    )
    @click.argument("localizations", nargs=-1, type=click.Path(dir_okay=False))
    def score(planted: str, localizations: tuple[str, ...]) -> None:
        """Score localization files (one method's cuts) against a planted model's S:
        precision and recall at |S|, AUPRC, and uniform random's |S|/N beside them."""
        found = score_files(planted, localizations)
        click.echo(
            f"{found.unit}s: |S| {found.truth_size:,} of {found.total:,}; cut of "
            f"{found.selected:,}: precision {found.precision:.4f}, recall {found.recall:.4f}; "
            f"AUPRC {found.auprc:.4f}; uniform random {found.chance:.4f}"
        )
