"""Finding the parameters locator scores in any Hugging Face causal language model.

The decoder blocks are the `nn.ModuleList` holding the most parameters (``model.layers`` in
Llama, ``transformer.h`` in GPT-2, ``gpt_neox.layers`` in Pythia), so no per-model code is
needed to find them. Inside them every `nn.Linear` and transformers' `Conv1D` (GPT-2, whose
weight is stored transposed as ``[d_in, d_out]``) is a scored linear. Embeddings, norms, biases
and the language-model head stay out, unless a caller asks for the head (``head=True``: the
untied output head, which some published codes score).

MLP neurons (for neuron-level methods) are found from the known layouts (`MlpLayout`): two sibling
linears in a block, one whose output channel j is neuron j's pre-activation and the down
projection whose input channel j is neuron j's activation. Plugins register layouts with the
``register_layouts`` hook; the common families' come from locator's own ``layouts`` plugin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from locator.errors import LocatorError
from locator.plugins import registry


@dataclass(frozen=True)
class ScoredParameter:
    """One scored weight matrix of a decoder block.

    `name` is the parameter name from `named_parameters()`, `module` the `named_modules()` path
    of its linear, `layer` the decoder block index, `kind` the path inside the block (for
    example ``self_attn.q_proj``), and `transposed` is True when the weight is stored
    ``[d_in, d_out]`` (`Conv1D`) instead of ``[d_out, d_in]`` (`nn.Linear`).
    """

    name: str
    module: str
    layer: int
    kind: str
    transposed: bool
    shape: tuple[int, ...]

    @property
    def d_in(self) -> int:
        """Number of input channels of the linear."""
        return self.shape[0] if self.transposed else self.shape[1]

    @property
    def numel(self) -> int:
        """Number of entries of the weight."""
        return self.shape[0] * self.shape[1]


def decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The `named_modules()` path and the module list of the model's decoder blocks."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            size = sum(p.numel() for p in module.parameters())
            if best is None or size > best[0]:
                best = (size, path, module)
    if best is None:
        raise LocatorError(
            f"{type(model).__name__} has no decoder blocks: locator looks for the nn.ModuleList "
            "of transformer blocks (as in model.layers or transformer.h) and found none."
        )
    return best[1], best[2]


def is_linear(module: nn.Module) -> bool:
    """True for `nn.Linear` and transformers' `Conv1D` (matched by class name, so no import)."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def scored_parameters(model: nn.Module, *, head: bool = False) -> dict[str, ScoredParameter]:
    """Every decoder linear's weight, keyed by parameter name, in model order; with `head`,
    then the output head's weight too when it is an `nn.Linear` not tied to the input
    embeddings (its `layer` is the number of blocks)."""
    blocks_path, blocks = decoder_blocks(model)
    prefix = f"{blocks_path}." if blocks_path else ""
    found: dict[str, ScoredParameter] = {}
    for layer, block in enumerate(blocks):
        for inner, module in block.named_modules():
            if not is_linear(module) or not inner:
                continue
            parameter = _scored(f"{prefix}{layer}.{inner}", module, layer, inner)
            found[parameter.name] = parameter
    if not found:
        raise LocatorError(
            f"{type(model).__name__} has no decoder linears: its blocks at {blocks_path!r} "
            "contain no nn.Linear or Conv1D modules."
        )
    if head:
        found.update(_untied_head(model, len(blocks)))
    return found


def _untied_head(model: nn.Module, layer: int) -> dict[str, ScoredParameter]:
    """The output head as a scored parameter, if it is an `nn.Linear` with a weight of its own."""
    output = getattr(model, "get_output_embeddings", lambda: None)()
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    if not isinstance(output, nn.Linear):
        return {}
    if embeddings is not None and output.weight is getattr(embeddings, "weight", None):
        return {}  # tied: the head is the embedding matrix
    path = next(path for path, module in model.named_modules() if module is output)
    parameter = _scored(path, output, layer, path)
    return {parameter.name: parameter}


def _scored(path: str, module: nn.Module, layer: int, kind: str) -> ScoredParameter:
    """The weight of the linear (or `Conv1D`) at `path` as a scored parameter."""
    return ScoredParameter(
        name=f"{path}.weight",
        module=path,
        layer=layer,
        kind=kind,
        transposed=not isinstance(module, nn.Linear),
        shape=tuple(module.get_parameter("weight").shape),
    )


_LAYER = re.compile(r"\.(\d+)\.")


def layer_and_kind(parameter_name: str) -> tuple[int, str]:
    """Split ``model.layers.3.mlp.down_proj.weight`` into ``(3, "mlp.down_proj")``.

    Used where only names are at hand (a loaded localization); the first dotted integer is the
    block index.
    """
    match = _LAYER.search(parameter_name)
    if match is None:
        return -1, parameter_name.removesuffix(".weight")
    return int(match.group(1)), parameter_name[match.end() :].removesuffix(".weight")


@dataclass(frozen=True, kw_only=True)
class MlpLayout:
    """Where an MLP's neurons are: two sibling linears inside a decoder block.

    `pre_activation` is the name of the linear whose output channel j is neuron j's
    pre-activation (the gate of a gated MLP), `down_projection` the name of the linear whose
    input channel j is neuron j's activation. Both are names of children of one module
    (``gate_proj`` and ``down_proj`` in Llama's ``mlp``; ``fc1`` and ``fc2`` directly in OPT's
    block), so one layout serves every family that uses those names.
    """

    name: str
    pre_activation: str
    down_projection: str


@dataclass(frozen=True)
class NeuronSite:
    """The MLP neurons of one decoder block.

    `name` is the down projection's parameter name, which keys neuron statistics and a neuron
    localization's indices; `pre_activation` and `down_projection` are `named_modules()` paths;
    `size` is the number of neurons (the down projection's input channels).
    """

    name: str
    layer: int
    pre_activation: str
    down_projection: str
    size: int


def mlp_layouts() -> tuple[MlpLayout, ...]:
    """The MLP layouts plugins register with ``register_layouts`` (the common families' come
    from locator's own ``layouts`` plugin)."""
    registered = registry("register_layouts")
    return tuple(registered.get(name) for name in registered.names())


def mlp_neurons(model: nn.Module) -> dict[str, NeuronSite]:
    """The MLP neurons of every decoder block, keyed by down-projection parameter name.

    Raises a `LocatorError` saying how to add a layout when a block has no known MLP.
    """
    parameters = scored_parameters(model)
    by_module = {p.module: p for p in parameters.values()}
    blocks_path, blocks = decoder_blocks(model)
    prefix = f"{blocks_path}." if blocks_path else ""
    layouts = mlp_layouts()
    found: dict[str, NeuronSite] = {}
    for layer, block in enumerate(blocks):
        before = len(found)
        for inner, _ in block.named_modules():
            path = f"{prefix}{layer}.{inner}." if inner else f"{prefix}{layer}."
            for layout in layouts:
                scored = by_module.get(path + layout.down_projection)
                source = by_module.get(path + layout.pre_activation)
                if scored is None or source is None:
                    continue
                # A fused or differently shaped linear is not a neuron pre-activation.
                if source.shape[1 if source.transposed else 0] != scored.d_in:
                    continue
                found[scored.name] = NeuronSite(
                    name=scored.name,
                    layer=layer,
                    pre_activation=path + layout.pre_activation,
                    down_projection=scored.module,
                    size=scored.d_in,
                )
        if len(found) == before:
            kinds = ", ".join(p.kind for p in parameters.values() if p.layer == layer)
            raise LocatorError(
                f"{type(model).__name__} has no recognizable MLP in decoder block {layer} "
                f"(its linears: {kinds}); neuron-level methods need its layout: register "
                "MlpLayout(name=..., pre_activation=<linear whose output is the neurons' "
                "pre-activation>, down_projection=<linear that reads the activations>) from a "
                "plugin's register_layouts hook (see CONTRIBUTING.md)."
            )
    return found
