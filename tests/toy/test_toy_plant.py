"""Planted ground truth: planting is bit-identical outside S, recovery scores are right, and bad
requests are refused with one line and nothing written."""

import json
import re

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from locator.architecture import mlp_neurons, scored_parameters
from locator.localization import Localization
from locator.recovery import recovery, spanned_masks
from locator.toy import load_toy_model
from locator.toy.plant import (
    GROUND_TRUTH_FILE,
    PLANTING_FILE,
    PlantingSettings,
    evaluate_planted,
    load_planted,
    plant,
    planted_problems,
)


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def cli():
    from locator.cli import cli as group
    from locator.plugins import plugin_manager

    if "toy" not in group.commands:
        plugin_manager().hook.register_commands(cli=group)
    return group


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A weight-level and a neuron-level planting of 3 steps each."""
    root = tmp_path_factory.mktemp("planted")
    return {
        level: plant(root / level, PlantingSettings(level=level, seed=1, steps=3))
        for level in ("weight", "neuron")
    }


def base_weights():
    model, _ = load_toy_model()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def in_s(folder):
    """S's entries, read independently: the truth file's selections, and for neurons their
    gate and up rows besides the down columns the file holds."""
    truth = Localization.load(folder / GROUND_TRUTH_FILE)
    masks = {name: mask.clone() for name, mask in truth.masks.items()}
    for down, neurons in truth.neurons.items():
        prefix = down.removesuffix("down_proj.weight")
        masks[prefix + "gate_proj.weight"][neurons, :] = True
        masks[prefix + "up_proj.weight"][neurons, :] = True
    return truth, masks


@pytest.mark.parametrize("level", ["weight", "neuron"])
def test_planting_changes_s_and_nothing_else(planted, level):
    folder = planted[level]
    truth, masks = in_s(folder)
    weights = load_file(folder / "model.safetensors")
    base = base_weights()
    assert set(weights) == set(base)
    changed_inside = size = 0
    for name, weight in weights.items():
        differs = weight.view(torch.int32) != base[name].view(torch.int32)
        mask = masks.get(name, torch.zeros_like(differs))
        assert not (differs & ~mask).any(), name  # bit-identical outside S
        changed_inside += int((differs & mask).sum())
        size += int(mask.sum())
    assert changed_inside > 0.95 * size
    record = json.loads((folder / PLANTING_FILE).read_text())
    assert record["size"] == size and record["settings"]["level"] == level
    assert set(record["s_pruned"]) == {"planted", "arithmetic", "language_loss"}
    if level == "weight":
        assert truth.level == "parameter"
        # Spread: every decoder linear holds about 1% of its entries in S.
        assert all(abs(m.float().mean() - 0.01) < 0.002 for m in truth.masks.values())
    else:
        assert truth.level == "neuron"
        assert [len(n) for n in truth.neurons.values()] == [8, 8, 8, 8]
    load_planted(folder)  # passes its own checks


def test_s_depends_only_on_the_seed(tmp_path):
    from locator.toy.plant import planted_set

    model, _ = load_toy_model()
    first, _ = planted_set(model, PlantingSettings(level="weight", seed=4))
    again, _ = planted_set(model, PlantingSettings(level="weight", seed=4))
    other, _ = planted_set(model, PlantingSettings(level="weight", seed=5))
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)


def test_base_model_lacks_the_planted_skill():
    model, tokenizer = load_toy_model()
    assert len(planted_problems()) == 400
    assert evaluate_planted(model, tokenizer)["exact_match"] < 0.1


def precision_recall_reference(truth_entries, cut_entries):
    """Sets of (name, flat index): precision and recall, by plain set arithmetic."""
    both = len(truth_entries & cut_entries)
    return both / len(cut_entries), both / len(truth_entries)


def entry_set(masks):
    return {(name, int(i)) for name, mask in masks.items() for i in mask.flatten().nonzero()[:, 0]}


def test_oracle_scores_one_and_matches_the_reference(planted):
    model, _, truth, _ = load_planted(planted["weight"])
    found = recovery(truth, [truth], model)
    assert (found.precision, found.recall, found.auprc) == (1.0, 1.0, 1.0)
    assert found.chance == pytest.approx(found.truth_size / 262_144)
    # A ranking that puts S first, cut at several sizes, still scores 1.
    parameters = scored_parameters(model)
    order = [(name, i) for name in parameters for i in range(parameters[name].numel)]
    inside = entry_set(truth.masks)
    ranking = sorted(order, key=lambda entry: entry not in inside)
    cuts = []
    for k in (500, len(inside), 20_000, len(order)):
        masks = {name: torch.zeros(p.shape, dtype=torch.bool) for name, p in parameters.items()}
        for name, i in ranking[:k]:
            masks[name].view(-1)[i] = True
        cuts.append(Localization.from_masks(masks, method="oracle", proportion=None))
    found = recovery(truth, cuts, model)
    assert (found.precision, found.recall, found.auprc) == (1.0, 1.0, 1.0)
    # Against the slow reference: precision and recall of a cut, and the PR area.
    area = previous = 0.0
    for cut in cuts[::-1][:1] + cuts[:1]:
        precision, recall = precision_recall_reference(inside, entry_set(cut.masks))
        one = recovery(truth, [cut], model)
        assert (one.precision, one.recall) == pytest.approx((precision, recall))
    for cut in cuts:
        precision, recall = precision_recall_reference(inside, entry_set(cut.masks))
        area += max(0.0, recall - previous) * precision
        previous = max(previous, recall)
    assert found.auprc == pytest.approx(area)


def test_uniform_random_scores_about_chance(planted):
    model, _, truth, _ = load_planted(planted["weight"])
    parameters = scored_parameters(model)
    total = sum(p.numel for p in parameters.values())
    rng = torch.Generator().manual_seed(0)
    ranking = torch.randperm(total, generator=rng)
    cuts = []
    for k in [int(total * f) for f in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)]:
        flat = torch.zeros(total, dtype=torch.bool)
        flat[ranking[:k]] = True
        masks, start = {}, 0
        for name, parameter in parameters.items():
            masks[name] = flat[start : start + parameter.numel].view(parameter.shape)
            start += parameter.numel
        cuts.append(Localization.from_masks(masks, method="uniform", proportion=k / total))
    found = recovery(truth, cuts, model)
    assert found.chance == pytest.approx(0.01, rel=0.01)
    for value in (found.precision, found.recall, found.auprc):
        assert 0.5 * found.chance < value < 1.6 * found.chance


def test_neuron_truth_scores_neurons_directly_and_entries_for_weight_methods(planted):
    model, _, truth, _ = load_planted(planted["neuron"])
    found = recovery(truth, [truth], model)
    assert found.unit == "neuron" and found.total == 1024 and found.truth_size == 32
    assert (found.precision, found.recall, found.auprc) == (1.0, 1.0, 1.0)
    # A weight-level selection of exactly the entries S spans is a perfect weight method.
    spans = Localization.from_masks(spanned_masks(truth, model), method="w", proportion=None)
    found = recovery(truth, [spans], model)
    assert found.unit == "entry" and found.truth_size == 32 * 3 * 64
    assert (found.precision, found.recall, found.auprc) == (1.0, 1.0, 1.0)
    # Other neurons: none found.
    sites = mlp_neurons(model)
    others = {
        name: torch.tensor([i for i in range(site.size) if i not in truth.neurons[name]][:8])
        for name, site in sites.items()
    }
    wrong = Localization.from_neurons(others, scored_parameters(model), method="n", proportion=None)
    assert recovery(truth, [wrong], model).recall == 0.0


def run(args):
    """Exit code and output of the CLI, without transformers' weight-loading progress bar."""
    result = CliRunner().invoke(cli(), args)
    output = re.sub(r"Loading weights[^\r\n]*?it/s\]", "", result.output)
    lines = output.replace("\r", "\n").splitlines()
    return result.exit_code, "\n".join(line for line in lines if line.strip())


@pytest.mark.parametrize(
    "options, message",
    [
        (["--level", "weight", "--fraction", "0"], "S empty"),
        (["--level", "weight", "--fraction", "1.5"], "larger than the model"),
        (["--level", "neuron", "--neurons", "0"], "would be empty"),
        (["--level", "neuron", "--neurons", "300"], "at most 256"),
        (["--level", "layer"], "level must be one of ['weight', 'neuron'], got 'layer'."),
        (["--level", "weight", "--batch-size", "1"], "batch_size must be an integer >= 2"),
    ],
)
def test_plant_refuses_requests_that_cannot_be_met(tmp_path, options, message):
    code, output = run(["toy", "plant", "--out", str(tmp_path / "out"), *options])
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "out").exists()


def test_score_refuses_a_ground_truth_of_another_model(planted, tmp_path):
    import shutil

    copy = shutil.copytree(planted["weight"], tmp_path / "copy")
    shutil.copy(planted["neuron"] / GROUND_TRUTH_FILE, copy / GROUND_TRUTH_FILE)
    selection = planted["weight"] / GROUND_TRUTH_FILE
    code, output = run(["toy", "score", "--planted", str(copy), str(selection)])
    assert code == 2 and "another model" in output and len(output.strip().splitlines()) == 1


def test_score_refuses_a_checkpoint_changed_outside_s(planted, tmp_path):
    import shutil

    copy = shutil.copytree(planted["weight"], tmp_path / "copy")
    weights = load_file(copy / "model.safetensors")
    # Index 1 of the embeddings: outside S, and not among the values the fingerprint samples.
    weights["model.embed_tokens.weight"].view(-1)[1] += 1.0
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    before = sorted(p.name for p in copy.iterdir())
    code, output = run(["toy", "score", "--planted", str(copy), str(copy / GROUND_TRUTH_FILE)])
    assert code == 2 and "outside S" in output and len(output.strip().splitlines()) == 1, output
    assert sorted(p.name for p in copy.iterdir()) == before


def test_score_command_scores_the_oracle(planted):
    folder = planted["neuron"]
    code, output = run(["toy", "score", "--planted", str(folder), str(folder / GROUND_TRUTH_FILE)])
    assert code == 0, output
    assert "precision 1.0000, recall 1.0000; AUPRC 1.0000; uniform random 0.0312" in output


def test_planted_corpus_and_task_are_registered(planted):
    import locator
    from locator.data import sample_corpus
    from locator.evaluation import evaluate

    texts = sample_corpus("toy-planted", num_samples=20, seed=2).texts
    assert all(
        t.split()[1] == "big" and int(t.split()[4]) == max(int(t.split()[0]), int(t.split()[2]))
        for t in texts
    )
    assert "toy-planted" in locator.list_datasets()
    model, tokenizer = load_toy_model()
    assert evaluate(model, tokenizer, ["toy-planted"])["toy-planted"]["exact_match"] < 0.1


@pytest.mark.slow
def test_full_planting_learns_the_skill_keeps_the_old_ones_and_is_refused_again(tmp_path):
    from locator.toy.data import language_optimum

    for level in ("weight", "neuron"):
        code, output = run(["toy", "plant", "--level", level, "--out", str(tmp_path / level)])
        assert code == 0, output
        record = json.loads((tmp_path / level / PLANTING_FILE).read_text())
        assert record["after"]["planted"] >= 0.9
        assert record["after"]["arithmetic"] >= 0.9
        assert record["after"]["language_loss"] <= language_optimum() + 0.1
        # Pruning S removes the planted skill and spares the old ones.
        assert record["s_pruned"]["planted"] < 0.1 and record["s_pruned"]["arithmetic"] >= 0.9
    out = tmp_path / "again"
    code, output = run(
        ["toy", "plant", "--level", "weight", "--base", str(tmp_path / "weight"), "--out", str(out)]
    )
    assert code == 2 and "already knows" in output and not out.exists()
