"""Forward passes: a repeated localization with another method or proportion reads the statistics
cache and runs none, a changed model or corpus never reuses a stale entry, and a method that
reads the target alone refuses controls before any pass."""

import copy

import pytest
import torch

import locator
from locator.errors import LocatorError
from locator.testing import sample_texts

TARGET, CONTROL = sample_texts(5, seed=21), sample_texts(5, seed=22)


class ForwardCounter:
    def __init__(self, model):
        self.calls = 0
        self.handle = model.get_decoder().register_forward_pre_hook(self)

    def __call__(self, *args):
        self.calls += 1


def localize(model, tokenizer, **options):
    """MathNeuro at K = 0.05 on TARGET in batches of 2, unless `options` say otherwise."""
    options = {"method": "mathneuro", "target": TARGET, "proportion": 0.05, **options}
    return locator.localize(model, tokenizer, batch_size=2, progress=False, **options)


def test_second_localization_reads_the_cache(llama, tokenizer, tmp_path):
    counter = ForwardCounter(llama)
    try:
        first = localize(llama, tokenizer, controls=[CONTROL], cache_dir=tmp_path)
        passes = counter.calls
        assert passes == 6  # 3 batches per corpus
        second = localize(llama, tokenizer, controls=[CONTROL], proportion=0.1, cache_dir=tmp_path)
        assert counter.calls == passes
        uncached = localize(llama, tokenizer, controls=[CONTROL], proportion=0.1)
        assert second.jaccard(uncached) == 1.0 and first.count() < second.count()
    finally:
        counter.handle.remove()


def test_other_weights_or_texts_miss_the_cache(llama, tokenizer, tmp_path):
    other = copy.deepcopy(llama)
    with torch.no_grad():
        other.model.layers[0].mlp.down_proj.weight.mul_(2)
    counter = ForwardCounter(other)
    try:
        localize(llama, tokenizer, cache_dir=tmp_path)
        localize(other, tokenizer, cache_dir=tmp_path)
        assert counter.calls == 3  # 3 batches: the changed weights missed the cache
        localize(other, tokenizer, target=TARGET[:4], cache_dir=tmp_path)
        assert counter.calls == 5  # 2 batches: the changed texts missed it too
    finally:
        counter.handle.remove()


def test_a_method_that_reads_the_target_alone_refuses_controls_before_any_pass(llama, tokenizer):
    counter = ForwardCounter(llama)
    try:
        with pytest.raises(LocatorError, match="reads the target alone"):
            localize(llama, tokenizer, method="wanda", controls=[CONTROL])
        assert counter.calls == 0
    finally:
        counter.handle.remove()


def test_a_kind_whose_identity_changed_is_computed_again(llama, tokenizer, tmp_path):
    from dataclasses import dataclass

    from locator.cache import cached_statistics
    from locator.plugins import register_plugin, unregister_plugin
    from locator.rows import corpus_rows
    from locator.stats import StatisticKind

    @dataclass(frozen=True, kw_only=True)
    class Tokens(StatisticKind):
        def batch(self, observed):
            return observed.real().sum(dim=(0, 1)).double() * self.version  # [1]

    def collect(version):
        class Plugin:
            @locator.hookimpl
            def register_statistics(self, register):
                register(
                    Tokens(name="tokens", site="linear_input", description="-", version=version)
                )

        register_plugin(Plugin(), name="tokens-kind")
        try:
            rows = corpus_rows(tokenizer, TARGET, locator.CalibrationOptions())
            return cached_statistics(
                llama, tokenizer, TARGET, rows, kinds={"tokens"}, cache_dir=tmp_path, progress=False
            )
        finally:
            unregister_plugin("tokens-kind")

    counter = ForwardCounter(llama)
    try:
        first = collect(1)
        assert collect(1).values == first.values and counter.calls == 1
        second = collect(2)  # another version of the kind: not read from the cache
        assert counter.calls == 2
    finally:
        counter.handle.remove()
    name = next(iter(first.values["tokens"]))
    assert float(second.get("tokens", name)[0]) == 2 * float(first.get("tokens", name)[0])


class CountingTokenizer:
    """A real tokenizer that counts how often it encodes."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_a_cache_miss_tokenizes_each_corpus_once(llama, tokenizer, tmp_path):
    counting = CountingTokenizer(tokenizer)
    missed = localize(llama, counting, controls=[CONTROL], cache_dir=tmp_path)
    assert counting.calls == 2  # target and control, each once for the key and the pass
    hit = localize(llama, counting, controls=[CONTROL], cache_dir=tmp_path)
    assert counting.calls == 4 and hit.jaccard(missed) == 1.0
    assert missed.jaccard(localize(llama, tokenizer, controls=[CONTROL])) == 1.0


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[:40]),  # truncated
        lambda path: path.write_bytes(b""),  # empty
        lambda path: path.write_bytes(_safetensors_with_header("[1, 2]")),  # wrong JSON type
    ],
)
def test_a_damaged_cache_entry_is_recomputed(llama, tokenizer, tmp_path, damage):
    first = localize(llama, tokenizer, controls=[CONTROL], cache_dir=tmp_path)
    for path in tmp_path.glob("statistics-*.safetensors"):
        damage(path)
    again = localize(llama, tokenizer, controls=[CONTROL], cache_dir=tmp_path)
    assert again.content_hash() == first.content_hash()


def _safetensors_with_header(header: str) -> bytes:
    from safetensors.torch import save

    return save({"input_norm_sum/x": torch.zeros(1)}, metadata={"locator": header})
