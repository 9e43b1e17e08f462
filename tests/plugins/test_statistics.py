"""Statistics: batched with padding equals batch size 1; hooks never leak."""

import copy

import pytest
import torch
from locator_plugins.statistics import INPUT_NORM_SUM, INPUT_SQUARE_SUM

from locator import LocatorError
from locator.passes import collect_statistics
from locator.testing import sample_texts

from ..integration import reference


def test_batched_padded_statistics_equal_the_fp64_reference(model, tokenizer):
    texts = sample_texts(7, seed=5)  # lengths 3..24 words: every batch is padded
    stats = collect_statistics(
        model,
        tokenizer,
        texts,
        kinds={INPUT_NORM_SUM, INPUT_SQUARE_SUM},
        batch_size=3,
        progress=False,
    )
    norms, squares = reference.channel_statistics(model, tokenizer, texts)
    assert stats.num_samples == 7
    assert stats.num_tokens == sum(len(tokenizer(t)["input_ids"]) for t in texts)
    for path in norms:
        name = f"{path}.weight"
        torch.testing.assert_close(
            stats.get(INPUT_NORM_SUM, name), norms[path], rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(
            stats.get(INPUT_SQUARE_SUM, name), squares[path], rtol=1e-5, atol=1e-6
        )


def test_batch_size_does_not_change_statistics(llama, tokenizer):
    texts = sample_texts(9, seed=6)
    one = collect_statistics(
        llama, tokenizer, texts, kinds={INPUT_NORM_SUM}, batch_size=1, progress=False
    )
    many = collect_statistics(
        llama, tokenizer, texts, kinds={INPUT_NORM_SUM}, batch_size=4, progress=False
    )
    for name, value in one.values[INPUT_NORM_SUM].items():
        torch.testing.assert_close(many.values[INPUT_NORM_SUM][name], value, rtol=1e-5, atol=1e-6)


def test_max_length_truncates(llama, tokenizer):
    stats = collect_statistics(
        llama,
        tokenizer,
        ["one two three four five six"],
        kinds={INPUT_NORM_SUM},
        max_length=3,
        progress=False,
    )
    assert stats.num_tokens == 3


def test_hooks_are_removed_on_exceptions(tokenizer):
    from locator.testing import tiny_model

    model = tiny_model("llama", vocab_size=len(tokenizer))
    layer = model.model.layers[1]

    def fail(*args):
        raise RuntimeError("boom")

    handle = layer.register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="boom"):
        collect_statistics(model, tokenizer, ["one two"], kinds={INPUT_NORM_SUM}, progress=False)
    handle.remove()
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("texts, message", [([], "is empty"), (["zz"], None)])
def test_empty_corpus_is_an_error(llama, tokenizer, texts, message):
    if message is None:
        # A text of unknown words still has tokens (<s> <unk>): fine.
        collect_statistics(llama, tokenizer, texts, kinds={INPUT_NORM_SUM}, progress=False)
        return
    with pytest.raises(LocatorError, match=message):
        collect_statistics(llama, tokenizer, texts, kinds={INPUT_NORM_SUM}, progress=False)


def test_model_without_decoder_linears_is_an_error(tokenizer):
    model = torch.nn.Sequential(torch.nn.ModuleList([torch.nn.LayerNorm(4)]))
    with pytest.raises(LocatorError, match="no decoder linears"):
        collect_statistics(model, tokenizer, ["one"], kinds={INPUT_NORM_SUM}, progress=False)


def test_bf16_model_accumulates_in_fp32_or_wider(llama, tokenizer):
    model = copy.deepcopy(llama).to(torch.bfloat16)
    stats = collect_statistics(
        model, tokenizer, sample_texts(3), kinds={INPUT_NORM_SUM}, progress=False
    )
    assert all(v.dtype == torch.float64 for v in stats.values[INPUT_NORM_SUM].values())


def test_pack_reads_one_token_stream_cut_into_rows(llama, tokenizer):
    texts = sample_texts(5, seed=8)
    stream = [t for text in texts for t in tokenizer(text)["input_ids"]]
    rows = [stream[i : i + 16] for i in range(0, len(stream) - 15, 16)]  # the tail is dropped
    expected = {}
    for ids in rows:  # one row at a time, fp32, plain hooks
        captured, handles = {}, []
        for path, module in reference.decoder_linears(llama).items():

            def hook(module, args, path=path, captured=captured):
                captured[path] = args[0].detach().double()[0]

            handles.append(module.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                llama(input_ids=torch.tensor([ids]))
        finally:
            for handle in handles:
                handle.remove()
        for path, x in captured.items():
            expected[path] = expected.get(path, 0) + x.square().sum(0)
    stats = collect_statistics(
        llama, tokenizer, texts, kinds={INPUT_SQUARE_SUM}, batch_size=2, pack=16, progress=False
    )
    assert stats.num_samples == len(rows) and stats.num_tokens == 16 * len(rows)
    for path, value in expected.items():
        torch.testing.assert_close(stats.get(INPUT_SQUARE_SUM, f"{path}.weight"), value)
    with pytest.raises(LocatorError, match="either max_length"):
        collect_statistics(llama, tokenizer, texts, kinds=set(), pack=16, max_length=8)
    with pytest.raises(LocatorError, match="pack 100000 is longer than the model's 128 positions"):
        collect_statistics(llama, tokenizer, texts, kinds=set(), pack=100000, progress=False)
    with pytest.raises(LocatorError, match="rows of 120"):  # longer than the corpus
        collect_statistics(llama, tokenizer, texts[:1], kinds=set(), pack=120, progress=False)
