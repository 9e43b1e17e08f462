"""The built-in MLP layouts: where the neurons of the common model families' MLPs are.

They register through the ``register_layouts`` hook like any plugin's layouts
(`locator.MlpLayout`).
"""

from __future__ import annotations

import locator

LAYOUTS: tuple[locator.MlpLayout, ...] = (
    # Llama, Mistral, Qwen2, Gemma 2 (and most gated-MLP families).
    locator.MlpLayout(name="gated", pre_activation="gate_proj", down_projection="down_proj"),
    locator.MlpLayout(name="gpt2", pre_activation="c_fc", down_projection="c_proj"),
    # Phi (in ``mlp``) and OPT (in the block itself).
    locator.MlpLayout(name="fc", pre_activation="fc1", down_projection="fc2"),
    locator.MlpLayout(
        name="gpt-neox", pre_activation="dense_h_to_4h", down_projection="dense_4h_to_h"
    ),
)
"""The built-in MLP layouts."""


@locator.hookimpl
def register_layouts(register):  # type: ignore[no-untyped-def]
    """Register the built-in MLP layouts."""
    for layout in LAYOUTS:
        register(layout)
