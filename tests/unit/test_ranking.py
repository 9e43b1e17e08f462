"""The tie rule: one ranking per matrix (or row), score descending then index ascending."""

import torch

from locator.ranking import top_cuts, top_indices


def by_rule(values, count):
    """The `count` first indices of a list ordered by (score descending, index ascending)."""
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[:count]


def test_ties_go_to_the_lowest_index_whatever_topk_picks():
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        rows, n = (int(v) for v in torch.randint(1, 30, (2,), generator=generator))
        scores = torch.randint(0, 4, (rows, n), generator=generator).float()  # many ties
        k = int(torch.randint(0, n + 1, (1,), generator=generator))
        flat = scores.flatten().tolist()
        assert top_indices(scores, k * rows).tolist() == by_rule(flat, k * rows)
        expected = [r * n + j for r in range(rows) for j in by_rule(scores[r].tolist(), k)]
        assert top_cuts(scores, [k / n], "row")[0].tolist() == expected


def test_every_cut_is_a_prefix_of_one_ranking():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0], [3.0, 0.0, 3.0, 3.0]])
    small, large = top_cuts(scores, [0.25, 0.5])
    assert small.tolist() == [1, 2]  # the two lowest-indexed 3.0s
    assert large.tolist() == [1, 2, 4, 6]
    assert top_cuts(scores, [0.25], "row", count=lambda p, n: 2)[0].tolist() == [1, 2, 4, 6]
