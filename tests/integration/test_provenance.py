"""Provenance and belonging: a localization records its model, versions and corpora, and every
operation on two localizations, or on a localization and a model, checks they belong together."""

import json
import warnings

import pytest
import torch
from click.testing import CliRunner

import locator
from locator.errors import LocatorError, LocatorWarning
from locator.localization import Localization
from locator.testing import sample_texts, tiny_model

TARGET = sample_texts(4, seed=31)


def _random(model, tokenizer, **options):
    return locator.localize(
        model, tokenizer, method="random", target=TARGET, proportion=0.1, progress=False, **options
    )


@pytest.fixture(scope="module")
def twin(tokenizer):
    """A Llama of the same shapes as the session one, with other weights."""
    return tiny_model("llama", seed=7, vocab_size=len(tokenizer))


def test_a_localization_records_model_versions_and_corpora(llama, tokenizer, tmp_path):
    found = _random(llama, tokenizer, max_length=16)
    provenance = found.provenance
    assert provenance["model"]["fingerprint"] and provenance["model"]["dtype"] == "float32"
    assert provenance["versions"]["locator"] and provenance["versions"]["torch"]
    assert provenance["max_length"] == 16
    [corpus] = provenance["corpora"]
    assert corpus["label"] == "target" and corpus["texts"] == 4 and len(corpus["sha256"]) == 32
    again = Localization.load(found.save(tmp_path / "x.safetensors"))
    assert again.provenance == json.loads(json.dumps(provenance))
    assert again.content_hash() == found.content_hash()


def test_check_warns_for_other_weights_and_refuses_when_strict(llama, twin, tokenizer):
    found = _random(llama, tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found.check(llama, strict=True)  # its own model: silent
    with pytest.warns(LocatorWarning, match="made from another model"):
        found.check(twin)
    with pytest.raises(LocatorError, match="weights fingerprint"):
        found.check(twin, strict=True)
    before = {n: p.clone() for n, p in twin.named_parameters()}
    with pytest.warns(LocatorWarning):
        with locator.intervene(twin, found, 0.0):
            pass
    assert all(torch.equal(p, before[n]) for n, p in twin.named_parameters())


def test_two_localizations_of_different_models_do_not_combine(llama, twin, gpt2, tokenizer):
    mine, same_shapes, other_family = (_random(m, tokenizer) for m in (llama, twin, gpt2))
    assert mine.jaccard(_random(llama, tokenizer, seed=3)) < 1.0  # same model: fine
    for other, words in [(same_shapes, "different models"), (other_family, "different param")]:
        for operation in (mine.jaccard, mine.union, mine.intersection, mine.difference):
            with pytest.raises(LocatorError, match=words):
                operation(other)
    smaller = Localization.from_masks(
        {n: torch.zeros(2, 2, dtype=torch.bool) for n in mine.selections},
        method="x",
        proportion=0.1,
    )
    with pytest.raises(LocatorError, match="has shape"):
        mine.jaccard(smaller)


def test_a_matched_baseline_refuses_a_reference_of_another_model(llama, twin, gpt2, tokenizer):
    reference = locator.localize(
        twin,
        tokenizer,
        method="mathneuro",
        target=TARGET,
        controls=[sample_texts(3, seed=2)],
        proportion=0.1,
        progress=False,
    )
    with pytest.raises(LocatorError, match="made from another model"):
        _random(llama, tokenizer, reference=reference)
    with pytest.raises(LocatorError, match="does not match the model"):
        _random(gpt2, tokenizer, reference=reference)
    assert _random(twin, tokenizer, reference=reference).count() == reference.count()


def test_a_split_a_dataset_does_not_have_is_refused():
    with pytest.raises(LocatorError, match="Unknown split of dataset 'toy-arithmetic' 'test'"):
        locator.sample_corpus("toy-arithmetic", split="test", num_samples=3)


def test_localize_to_file_records_file_corpora_by_name_and_hash(saved_model, tmp_path):
    from locator.heldout import calibration_texts
    from locator.localizer import localize_to_file
    from locator.provenance import file_hash

    corpus = tmp_path / "math.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": t}) for t in TARGET))
    out = tmp_path / "x.safetensors"

    def run():
        return localize_to_file(
            locator.ModelOptions(path=str(saved_model)), out, method="random",
            target=str(corpus), proportion=0.1,
            calibration=locator.CalibrationOptions(max_length=8),
        )  # fmt: skip

    found, path = run()
    assert path == out and Localization.load(out).provenance == found.provenance
    [entry] = found.provenance["corpora"]
    assert entry["file"] == "math.jsonl" and entry["file_sha256"] == file_hash(corpus)
    assert entry["label"] == "target" and entry["texts"] == len(calibration_texts(corpus))
    assert found.provenance["max_length"] == 8
    assert found.provenance["model"]["name"] == str(saved_model)
    run()  # rewriting its own output is fine; a file that is not a localization never is
    out.unlink()
    out.write_text("notes")
    with pytest.raises(LocatorError, match="is not a file locator wrote"):
        run()


def test_the_plugin_contract_fails_a_method_that_selects_every_entry():
    from locator.localization import Selection
    from locator.localizer import Localizer
    from locator.plugins import register_plugin, unregister_plugin
    from locator.testing import LocalizerContract

    class EverythingLocalizer(Localizer):
        name = "everything"
        uses_controls = False

        def localize(self, context, proportion):
            return {
                name: Selection.from_mask(torch.ones(p.shape, dtype=torch.bool))
                for name, p in context.parameters.items()
            }

    class Plugin:
        @locator.hookimpl
        def register_localizers(self, register):
            register(EverythingLocalizer)

    class Contract(LocalizerContract):
        method = "everything"

    register_plugin(Plugin(), name="everything")
    try:
        with pytest.raises(AssertionError, match="more than the budget"):
            Contract().test_selections_match_parameters_and_weights_unchanged()
    finally:
        unregister_plugin("everything")


def test_a_damaged_statistics_cache_entry_is_recomputed(llama, tokenizer, tmp_path):
    first = _random(llama, tokenizer, cache_dir=tmp_path)
    for entry in tmp_path.iterdir():
        entry.write_bytes(b"damaged")
    again = locator.localize(
        llama,
        tokenizer,
        method="mathneuro",
        target=TARGET,
        controls=[sample_texts(2)],
        proportion=0.1,
        progress=False,
        cache_dir=tmp_path,
    )
    assert again.count() > 0 and first.count() > 0


def test_the_cli_warns_in_one_line_when_a_localization_meets_other_weights(
    llama, twin, tokenizer, tmp_path
):
    from locator.cli import cli

    twin.save_pretrained(tmp_path / "twin")
    tokenizer.save_pretrained(tmp_path / "twin")
    found = _random(llama, tokenizer).save(tmp_path / "x.safetensors")
    argv = ["edit", "--model", str(tmp_path / "twin"), "--localization", str(found)]
    result = CliRunner().invoke(cli, [*argv, "--factor", "0", "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    [line] = [line for line in result.output.splitlines() if "made from another model" in line]
    assert line.startswith("Warning: localization (random) was made from another model")
