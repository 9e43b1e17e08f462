"""Test helpers for locator and its plugins: tiny random models and a contract for methods.

A plugin's test suite proves its method behaves by subclassing `LocalizerContract`::

    from locator.testing import LocalizerContract

    class TestMyMethod(LocalizerContract):
        method = "my-method"
        options = {"alpha": 0.5}

The models are built from transformers configs with random weights and a word-level tokenizer
trained here with `tokenizers`, so no download is ever needed.
"""

from __future__ import annotations

import random
from typing import Any

WORDS = (
    "the a one two three four five six seven eight nine ten plus minus times equals is are "
    "cat cats dog dogs bird birds sees see runs run eats eat red blue small big quickly slowly "
    "and or but if then so because number sum product answer question solve compute total"
).split()


def sample_texts(
    count: int, *, seed: int = 0, min_words: int = 3, max_words: int = 24
) -> list[str]:
    """`count` texts of random lengths from a small vocabulary (seeded)."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
        for _ in range(count)
    ]


def tiny_tokenizer() -> Any:
    """A word-level `PreTrainedTokenizerFast` over `WORDS`, with bos, eos, pad and unk."""
    from locator.toy.tokenizer import word_tokenizer

    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    vocabulary = {word: i for i, word in enumerate(specials + sorted(set(WORDS)))}
    return word_tokenizer(
        vocabulary, bos="<s>", pad="<pad>", unk="<unk>", split="Whitespace", eos_token="</s>"
    )


# The tiny shape every family shares: hidden size 32, two blocks of four heads.
_SIZES: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 128,
}


# The tiny shape of the families that name their sizes alike (Phi, GPT-NeoX, and, with grouped
# key/value heads, the gated-MLP families Mistral, Qwen2 and Gemma 2).
_TINY: dict[str, Any] = {**_SIZES, "intermediate_size": 64}
_GATED: dict[str, Any] = {**_TINY, "num_key_value_heads": 2}

TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": (
        "LlamaConfig",
        {**_SIZES, "intermediate_size": 48, "num_key_value_heads": 2, "tie_word_embeddings": False},
    ),
    "gpt2": ("GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128}),
    "mistral": ("MistralConfig", {**_GATED, "sliding_window": 16}),
    "qwen2": ("Qwen2Config", _GATED),
    # Gemma 2's head_dim defaults to 256 whatever the hidden size; ties its head by default.
    "gemma2": ("Gemma2Config", {**_GATED, "head_dim": 8, "sliding_window": 16}),
    # The phi-1.5 layout: q/k/v/dense attention, fc1/fc2 MLP, partial rotary embeddings.
    "phi": ("PhiConfig", _TINY),
    # Pythia's layout: fused query_key_value, dense_h_to_4h/dense_4h_to_h, untied head.
    "gpt_neox": ("GPTNeoXConfig", _TINY),
    # word_embed_proj_dim != hidden_size adds project_in/project_out outside the blocks.
    "opt": ("OPTConfig", {**_SIZES, "ffn_dim": 64, "word_embed_proj_dim": 16}),
}
"""Tiny (hidden size 32, two blocks) configs of each supported family, by name: the
transformers config class and its sizes."""


def tiny_config(family: str, vocab_size: int) -> Any:
    """The transformers config of `family` (`TINY_CONFIGS`) with `vocab_size` tokens."""
    import transformers

    name, sizes = TINY_CONFIGS[family]
    return getattr(transformers, name)(vocab_size=vocab_size, **sizes)


def tiny_model(family: str = "llama", *, seed: int = 0, vocab_size: int | None = None) -> Any:
    """A randomly initialized causal LM of the given family (see `TINY_CONFIGS`), fp32, eval."""
    import torch
    from transformers import AutoModelForCausalLM

    if vocab_size is None:
        vocab_size = len(tiny_tokenizer())
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size))
    return model.eval()


def write_tiny_gguf(path: Any, *, seed: int = 0) -> Any:
    """Write a tiny random Llama with a byte-level BPE tokenizer as an F32 GGUF file at `path`
    (needs the ``gguf`` package) and return the model it holds, to compare a loaded copy with.

    Tensors are named and laid out as llama.cpp's converter does: GGUF block names, and the
    query and key rows of each head interleaved (the loader undoes it).
    """
    import gguf
    import torch
    from transformers import LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_symbols = [bytes_to_unicode()[b] for b in range(256)]
    tokens = ["<s>", "</s>", *byte_symbols, "th", "the"]
    config = tiny_config("llama", len(tokens))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.NORMAL] * 258)
    writer.add_token_merges(["t h", "th e"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_add_bos_token(True)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        weight = tensor.detach().float()
        heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
        for projection, count in heads.items():
            if f".{projection}." in name:  # rows (head, pair, i) -> (head, i, pair)
                weight = weight.reshape(count, 2, -1, weight.shape[-1]).transpose(1, 2)
                weight = weight.reshape(tensor.shape)
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, f"no GGUF name for {name}"
        writer.add_tensor(gguf_name, weight.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


class LocalizerContract:
    """Subclass in a plugin's tests, setting `method` (and `options`), to check the contract:
    config round-trip, determinism under a seed, selections keyed by real parameter names with
    matching shapes, no more than the proportion's budget for parameter methods, weights
    unchanged, and no hooks or parameter gradients left behind (methods that run the model
    included)."""

    method: str = ""
    options: dict[str, Any] = {}
    families: tuple[str, ...] = ("llama", "gpt2")
    proportion = 0.05
    controls = 1

    def _localize(self, model: Any, seed: int = 0) -> Any:
        import locator
        from locator.localizer import localizer_class

        controls = self.controls if localizer_class(self.method).uses_controls else 0
        return locator.localize(
            model,
            tiny_tokenizer(),
            method=self.method,
            target=sample_texts(6, seed=1),
            controls=[sample_texts(6, seed=2 + i) for i in range(controls)],
            proportion=self.proportion,
            seed=seed,
            batch_size=4,
            progress=False,
            options=self.options,
        )

    def _run(self, family: str, seed: int = 0) -> tuple[Any, Any]:
        model = tiny_model(family)
        return model, self._localize(model, seed)

    def test_config_round_trip(self) -> None:
        """The config built from options reproduces itself from its own dict."""
        import dataclasses

        import locator

        localizer = locator.get_localizer(self.method, self.options)
        again = locator.get_localizer(self.method, dataclasses.asdict(localizer.config))
        assert again.config == localizer.config

    def test_selections_match_parameters_and_weights_unchanged(self) -> None:
        """Selections are keyed by real parameter names with their shapes, within the budget of
        the proportion (parameter-level methods); weights untouched; no hooks left."""
        import torch

        from locator.ranking import top_count

        for family in self.families:
            model = tiny_model(family)
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            hooks_before = _hook_count(model)
            result = self._localize(model)
            parameters = dict(model.named_parameters())
            assert result.selections, "no parameter was scored"
            for name, mask in result.masks.items():
                assert name in parameters
                assert tuple(mask.shape) == tuple(parameters[name].shape)
            assert result.method == self.method
            assert result.count() > 0
            if result.level == "parameter":  # the budget: floor(K x numel) per matrix
                for name, selection in result.selections.items():
                    budget = top_count(self.proportion, selection.numel)
                    assert selection.count <= budget, (
                        f"{self.method} selects {selection.count} entries of {name}, more than "
                        f"the budget floor({self.proportion} x {selection.numel}) = {budget}"
                    )
            for name, parameter in model.named_parameters():
                assert torch.equal(parameter, before[name]), f"{self.method} edited {name}"
                assert parameter.grad is None, f"{self.method} left a gradient on {name}"
            assert _hook_count(model) == hooks_before, "hooks left behind"

    def test_deterministic_under_seed(self) -> None:
        """Same seed, same selection."""
        _, first = self._run(self.families[0], seed=3)
        _, second = self._run(self.families[0], seed=3)
        assert first.jaccard(second) == 1.0
        assert first.count() == second.count()

    def test_saves_and_loads(self, tmp_path: Any) -> None:
        """The localization round-trips through its file."""
        from locator.localization import Localization

        _, result = self._run(self.families[0])
        loaded = Localization.load(result.save(tmp_path / "selection.safetensors"))
        assert loaded.jaccard(result) == 1.0
        assert loaded.method == result.method and loaded.config == result.config


def _hook_count(model: Any) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
