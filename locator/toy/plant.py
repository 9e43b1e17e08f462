"""Planting a new skill into a known set of the toy model's parameters: a ground truth.

Every verdict of a localization method on a pretrained model is indirect, because nobody knows
which parameters carry a skill. Here we make a model for which it is known: starting from the
shipped toy model, a skill it cannot do is taught by training *only* a seeded set S of
parameters, every other weight bit-identical to the base model's.

* **The planted skill** (task and corpus ``toy-planted``): ``a big b = max(a, b)`` for operands
  0-19, 400 problems, written with tokens the toy tokenizer already has (the adjective ``big`` as
  the operator). The base model answers 5% of them (it never saw ``big`` between numbers).
* **Weight level** (``level="weight"``): S is a seeded uniform random set of `fraction` (1%) of
  the entries of every decoder linear (so spread across all layers and module kinds); the
  ground truth is a parameter-level `Localization`.
* **Neuron level** (``level="neuron"``): S is a seeded set of `neurons` MLP neurons in every
  layer: their gate and up rows and their down-projection columns are trained; the ground truth
  is a neuron-level `Localization` of those neurons.

Training: Adam without weight decay over the linears that hold S, gradients multiplied by S's
mask, so every entry outside S gets a zero update (Adam's moments stay zero there); embeddings,
norms and the output head are frozen. Batches mix the planted skill with replay of the old ones
(arithmetic and grammar, drawn as the toy's own training draws them), so the old skills stay
intact. After training every weight outside S is compared with the base model's bit for bit.

What recovering S means: S holds the planted skill's own changes. Machinery the planted skill
shares with the old skills (token embeddings, attention that moves operands, the base values of
the weights in S) lies outside S or was there before, which is the split a skill-specific method
such as MathNeuro claims to make.

A planted model folder holds the checkpoint (a Hugging Face folder with the tokenizer),
``ground-truth.safetensors`` (S) and ``planting.json`` (the settings, the seed, the base model's
fingerprint, and the accuracies and losses measured before and after planting and with S pruned).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from locator.errors import LocatorError
from locator.options import OptionError, Options, option
from locator.toy.data import ArithmeticProblem

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from locator.localization import Localization

PLANTED_TASK = "toy-planted"
"""Name of the planted skill's corpus and evaluation task."""

OPERATOR = "big"
"""The planted operator: ``a big b`` is the larger of a and b (a word the tokenizer has)."""

OPERAND_MAX = 19
PLANTING_FILE = "planting.json"
GROUND_TRUTH_FILE = "ground-truth.safetensors"
Level = Literal["weight", "neuron"]
"""The levels S is planted at: entries of the decoder linears, or MLP neurons."""
LEVELS: tuple[str, ...] = get_args(Level)
LANGUAGE_LIMIT = 500
"""Held-out sentences the planting's language check reads (about 3,000 scored positions)."""
KNOWN_ACCURACY = 0.5
"""A base model that already answers this share of the planted problems knows the skill."""


class MaxProblem(ArithmeticProblem):
    """One planted problem, ``a big b = max(a, b)`` (its `operator` is `OPERATOR`)."""

    @property
    def answer(self) -> int:
        """The larger operand."""
        return max(self.left, self.right)


def planted_problems() -> list[MaxProblem]:
    """Every planted problem (400), in a fixed order."""
    span = range(OPERAND_MAX + 1)
    return [MaxProblem(a, OPERATOR, b) for a in span for b in span]


def evaluate_planted(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    limit: int | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Exact match (0-1) of greedy answers (the number, then eos) on the planted problems,
    in a seeded order so that ``limit`` takes a representative sample."""
    from locator.toy.evaluate import exact_match

    problems = planted_problems()
    random.Random("toy-planted-test").shuffle(problems)
    problems = problems[:limit]
    if not problems:
        raise LocatorError("limit must leave at least one planted problem to evaluate.")
    return exact_match(model, tokenizer, problems, batch_size, max_new_tokens=2)


@dataclass(frozen=True, kw_only=True)
class PlantingSettings(Options):
    """How to plant: the level and seed of S, its size, and the training recipe."""

    level: Level = option(
        help="The level of S: weight (entries of every decoder linear) or neuron (MLP neurons)."
    )
    seed: int = option(0, minimum=0, help="Seed of S.")
    fraction: float = option(0.01, help="Weight level: S's share of each decoder linear, (0, 1].")
    neurons: int = option(8, minimum=0, help="Neuron level: S's MLP neurons per layer, >= 1.")
    steps: int = option(300, minimum=1, help="Training steps.")
    batch_size: int = option(128, minimum=2, help="Texts per batch.")
    planted_share: float = option(
        0.4, above=0, below=1, help="Share of each batch that is planted problems (rest: replay)."
    )
    replay_arithmetic: float = option(
        0.8,
        minimum=0,
        maximum=1,
        help="Share of the replay that is arithmetic (the fact table forgets faster than the "
        "grammar); the rest is sentences.",
    )
    learning_rate: float = option(
        2e-2, above=0, help="Learning rate; it decays to 5% of this along a cosine."
    )

    def __post_init__(self) -> None:
        """Check the bounds, then S's size at its level."""
        super().__post_init__()
        if self.level == "weight" and not 0 < self.fraction <= 1:
            raise OptionError(
                "fraction",
                f"must be in (0, 1] (S empty or larger than the model), got {self.fraction!r}.",
            )
        if self.level == "neuron" and self.neurons < 1:
            raise OptionError(
                "neurons", f"must be >= 1 per layer (S would be empty), got {self.neurons!r}."
            )


def planted_set(
    model: PreTrainedModel, settings: PlantingSettings
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """S for `model` under `settings`: ``(masks, neurons)``.

    `masks` maps every decoder linear's parameter name to a boolean mask of its entries in S;
    `neurons` (neuron level only) maps each MLP's down-projection parameter name to S's sorted
    neuron indices. Depends only on the seed, the settings and the model's shapes.
    """
    import torch

    from locator.architecture import mlp_neurons, scored_parameters
    from locator.recovery import neuron_linears

    parameters = scored_parameters(model)
    generator = torch.Generator().manual_seed(settings.seed)
    masks = {name: torch.zeros(p.shape, dtype=torch.bool) for name, p in parameters.items()}
    neurons: dict[str, torch.Tensor] = {}
    if settings.level == "weight":
        for name, parameter in parameters.items():
            count = max(1, round(settings.fraction * parameter.numel))
            chosen = torch.randperm(parameter.numel, generator=generator)[:count]
            masks[name].view(-1)[chosen] = True
        return masks, neurons
    for name, site in mlp_neurons(model).items():
        if settings.neurons > site.size:
            raise LocatorError(
                f"neurons must be at most {site.size} per layer (the MLP size), got "
                f"{settings.neurons}."
            )
        chosen = torch.randperm(site.size, generator=generator)[: settings.neurons].sort().values
        neurons[name] = chosen
        for entry, rows in neuron_linears(parameters, site.name, site.size).items():
            if rows:
                masks[entry][chosen, :] = True
            else:
                masks[entry][:, chosen] = True
    return masks, neurons


def skill_scores(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
    """The planted skill's and the old skills' measures, flat: ``planted``, ``arithmetic``
    (exact match) and ``language_loss`` (nats)."""
    from locator.toy.evaluate import evaluate_arithmetic, evaluate_language

    return {
        "planted": evaluate_planted(model, tokenizer)["exact_match"],
        "arithmetic": evaluate_arithmetic(model, tokenizer)["exact_match"],
        "language_loss": evaluate_language(model, tokenizer, limit=LANGUAGE_LIMIT)["loss"],
    }


def plant_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, settings: PlantingSettings
) -> tuple[Localization, dict[str, Any]]:
    """Plant the skill into `model` in place; return S as a `Localization` and a record of the
    planting (settings, accuracies before and after, wall time). Refuses a model that already
    knows the skill; checks afterwards that nothing outside S moved."""
    import torch

    from locator.intervention import intervene
    from locator.localization import Localization
    from locator.provenance import model_identity
    from locator.toy.train import pad_batch, problem_examples, training_examples

    masks, neurons = planted_set(model, settings)  # checks the settings first
    before = skill_scores(model, tokenizer)
    if before["planted"] >= KNOWN_ACCURACY:
        raise LocatorError(
            f"the model already knows the planted skill (exact match {before['planted']:.2f} >= "
            f"{KNOWN_ACCURACY}); plant into a model without it, such as the shipped toy model."
        )
    base_identity = model_identity(model)
    named = dict(model.named_parameters())
    base = {name: parameter.detach().clone() for name, parameter in named.items()}
    trainable = {name: parameter.requires_grad for name, parameter in named.items()}
    trained = [name for name, mask in masks.items() if bool(mask.any())]
    gates = {name: masks[name].to(named[name].dtype) for name in trained}

    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    try:
        for name, parameter in named.items():
            parameter.requires_grad_(name in gates)
        # No weight decay: it would move every entry of a trained matrix, S or not.
        optimizer = torch.optim.Adam(
            [named[name] for name in trained], lr=settings.learning_rate, betas=(0.9, 0.98)
        )
        rng = random.Random(f"toy-plant:{settings.seed}")
        planted, problems = round(settings.batch_size * settings.planted_share), planted_problems()
        model.train()
        for step in range(settings.steps):
            progress = step / max(1, settings.steps - 1)
            factor = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))
            for group in optimizer.param_groups:
                group["lr"] = settings.learning_rate * factor
            old = training_examples(  # replay of the old skills, drawn as training draws them
                rng,
                batch_size=settings.batch_size - planted,
                arithmetic_fraction=settings.replay_arithmetic,
            )
            new = problem_examples([rng.choice(problems) for _ in range(planted)])
            loss = model(**pad_batch(old + new)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for name, gate in gates.items():
                grad = named[name].grad
                assert grad is not None
                grad.mul_(gate)
            optimizer.step()
        wall = time.perf_counter() - started
    finally:
        for name, parameter in named.items():
            parameter.requires_grad_(trainable[name])
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)
    model.eval()
    check_outside(named, base, masks)
    after = skill_scores(model, tokenizer)
    metadata: dict[str, Any] = {
        "method": "planted",
        "proportion": None,
        "config": {"level": settings.level, "seed": settings.seed},
        "seed": settings.seed,
        "target": PLANTED_TASK,
        "provenance": {"model": model_identity(model), "base_model": base_identity},
    }
    if settings.level == "neuron":
        from locator.architecture import scored_parameters

        truth = Localization.from_neurons(neurons, scored_parameters(model), **metadata)
    else:
        truth = Localization.from_masks(masks, **metadata)
    with intervene(model, truth, 0.0):  # the removal check that makes S the truth
        pruned = skill_scores(model, tokenizer)
    record = {
        "settings": asdict(settings),
        "size": int(sum(int(mask.sum()) for mask in masks.values())),
        "neuron_count": truth.neuron_count(),
        "before": before,
        "after": after,
        "s_pruned": pruned,
        "wall_seconds": round(wall, 1),
        "base_fingerprint": base_identity["fingerprint"],
        "torch_version": torch.__version__,
    }
    return truth, record


def check_outside(
    weights: Mapping[str, torch.Tensor],
    base: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
) -> None:
    """Raise a one-line `LocatorError` unless every weight outside S equals the base model's
    bit for bit (every parameter not in `masks` wholly, the others outside their mask)."""
    import torch

    if set(weights) != set(base):
        raise LocatorError("the planted model's parameters are not the base model's.")
    for name, weight in weights.items():
        mask = masks.get(name)
        outside = ~mask if mask is not None else torch.ones(weight.shape, dtype=torch.bool)
        if weight.shape != base[name].shape or not torch.equal(
            weight.detach()[outside].view(torch.int32), base[name][outside].view(torch.int32)
        ):
            raise LocatorError(
                f"the planted model's {name!r} differs from the base model's outside S; "
                "a planted checkpoint must leave every other weight bit-identical."
            )


def is_planted_model(folder: Path) -> bool:
    """Whether `folder` is a planted model folder written by `plant` (it holds the record)."""
    return (folder / PLANTING_FILE).is_file()


def plant(
    out_dir: str | Path,
    settings: PlantingSettings,
    *,
    base: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Plant the skill into the toy model at `base` (default: the shipped one) and write the
    planted model folder `out_dir` (checkpoint, ground truth, record); returns the folder.

    Nothing is written when the request cannot be met (bad settings, a base that knows the
    skill already, an output folder that is not a planted model's, without `force`).
    """
    from locator.io import atomic_directory, check_output_directory
    from locator.toy import load_toy_model

    out = check_output_directory(
        out_dir, owned=is_planted_model, what="a planted toy model", force=force
    )
    model, tokenizer = load_toy_model(base)
    truth, record = plant_model(model, tokenizer, settings)
    record["base"] = str(Path(base).resolve()) if base is not None else None

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        truth.save(folder / GROUND_TRUTH_FILE)
        (folder / PLANTING_FILE).write_text(json.dumps(record, indent=2) + "\n")

    return atomic_directory(out, write, replace=force)


def load_planted(
    folder: str | Path, *, base: str | Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Localization, dict[str, Any]]:
    """Load a planted model folder and check it: ``(model, tokenizer, truth, record)``.

    The ground truth must belong to this model (its recorded weights fingerprint), and every
    weight outside S must equal the base model's bit for bit (`base`: default the folder the
    record names, or the shipped toy model; it must be the model planted into, by its weights
    fingerprint); otherwise a one-line `LocatorError`.
    """
    from locator.localization import Localization
    from locator.provenance import model_identity
    from locator.recovery import spanned_masks
    from locator.toy import load_toy_model

    folder = Path(folder)
    if not is_planted_model(folder):
        raise LocatorError(
            f"{str(folder)!r} is not a planted toy model folder (no {PLANTING_FILE}); write one "
            "with `locator toy plant`."
        )
    truth = Localization.load(folder / GROUND_TRUTH_FILE)
    record = json.loads((folder / PLANTING_FILE).read_text())
    model, tokenizer = load_toy_model(folder)
    truth.check(model, strict=True)
    base_model, _ = load_toy_model(base if base is not None else record.get("base"))
    if model_identity(base_model)["fingerprint"] != record.get("base_fingerprint"):
        raise LocatorError(
            f"the base model given for {str(folder)!r} is not the one it was planted into "
            "(another weights fingerprint); give the base model the planting started from."
        )
    masks = spanned_masks(truth, model)
    check_outside(
        dict(model.named_parameters()),
        {name: p.detach() for name, p in base_model.named_parameters()},
        masks,
    )
    return model, tokenizer, truth, record


def score_files(planted: str | Path, files: Sequence[str | Path]) -> Any:
    """Score localization files (one method's cuts, for example the selections a ground-truth
    results folder's rows name) against the ground truth of the planted model folder `planted`,
    after checking the planted model; returns a `locator.recovery.Recovery`."""
    from locator.localization import Localization
    from locator.recovery import recovery

    if not files:
        raise LocatorError("give at least one localization file to score.")
    model, _, truth, _ = load_planted(planted)
    return recovery(truth, [Localization.load(path) for path in files], model)
