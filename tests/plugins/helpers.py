"""Checks shared by the method tests."""

import locator


def assert_cuts_equal_single_runs(model, localizer, context, proportions):
    """Every proportion cut by `localize_many` from one ranking equals a run of that proportion
    alone, and records its proportion; returns the cuts."""
    cuts = locator.run_method(model, localizer, context, proportions)
    for cut, proportion in zip(cuts, proportions, strict=True):
        (single,) = locator.run_method(model, localizer, context, [proportion])
        assert cut.jaccard(single) == 1.0 and cut.proportion == proportion
    return cuts
