"""Fixtures shared by the method tests."""

import copy

import pytest

from ..integration import reference


@pytest.fixture(scope="module")
def saliency(request):
    """Per family: the fp64 model and its reference saliency of the test module's ``TARGET`` and
    ``CONTROLS``, computed once per module."""
    corpora = [request.module.TARGET, *request.module.CONTROLS]
    cache = {}

    def get(model, tokenizer):
        family = reference.family_of(model)
        if family not in cache:
            model64 = copy.deepcopy(model).double()
            cache[family] = (
                model64,
                [reference.snip_saliency(model64, tokenizer, texts) for texts in corpora],
            )
        return cache[family]

    return get
