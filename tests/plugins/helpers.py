"""Checks shared by the method tests."""

import pytest

import locator


def assert_cuts_equal_single_runs(model, localizer, context, proportions):
    """Every proportion cut by `localize_many` from one ranking equals a run of that proportion
    alone, and records its proportion; returns the cuts."""
    cuts = locator.run_method(model, localizer, context, proportions)
    for cut, proportion in zip(cuts, proportions, strict=True):
        (single,) = locator.run_method(model, localizer, context, [proportion])
        assert cut.jaccard(single) == 1.0 and cut.proportion == proportion
    return cuts


def assert_one_line_error(message, call, *args, **kwargs):
    """``call(*args, **kwargs)`` raises a one-line `LocatorError` that says `message`."""
    with pytest.raises(locator.LocatorError) as error:
        call(*args, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def assert_refused(model, tokenizer, method, target, arguments, message):
    """`locator.localize` of `method` on `target` (at K = 0.1 unless `arguments` say otherwise)
    is refused with a one-line error that says `message`."""
    arguments = {"method": method, "target": target, "proportion": 0.1, **arguments}
    assert_one_line_error(message, locator.localize, model, tokenizer, progress=False, **arguments)


def localized(model, tokenizer, method, proportion, target, controls=(), **arguments):
    """`locator.localize` of `method` at `proportion` on `target` and `controls`, without a
    progress bar."""
    arguments.update(method=method, proportion=proportion, target=target, controls=controls)
    return locator.localize(model, tokenizer, progress=False, **arguments)
