"""Localization: compact storage, counts, set algebra, overlap, files."""

import pytest
import torch

from locator import LocatorError
from locator.localization import Localization, Selection


def masks(seed, density, shapes=None):
    generator = torch.Generator().manual_seed(seed)
    shapes = shapes or {
        "model.layers.0.mlp.down_proj.weight": (8, 16),
        "model.layers.1.self_attn.q_proj.weight": (16, 16),
    }
    return {n: torch.rand(s, generator=generator) < density for n, s in shapes.items()}


@pytest.mark.parametrize("density", [0.0, 0.01, 0.3, 1.0])
def test_selection_round_trips_at_every_density(density):
    mask = torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) < density
    selection = Selection.from_mask(mask)
    assert torch.equal(selection.mask(), mask)
    assert selection.count == int(mask.sum())
    assert torch.equal(selection.indices(), mask.flatten().nonzero()[:, 0])
    again = Selection.from_indices(selection.indices(), (64, 64))
    assert torch.equal(again.mask(), mask)


def test_dense_selections_are_bits_and_sparse_ones_indices():
    sparse = Selection.from_mask(torch.rand(64, 64) < 0.01)
    dense = Selection.from_mask(torch.rand(64, 64) < 0.5)
    assert sparse.stored()[0] == "indices" and sparse.stored()[1].dtype == torch.int32
    assert dense.stored()[0] == "bits" and dense.nbytes == 64 * 64 // 8


def test_counts_fractions_and_groups():
    m = masks(0, 0.25)
    loc = Localization.from_masks(m, method="x", proportion=0.25)
    assert loc.count() == sum(int(v.sum()) for v in m.values())
    assert loc.numel() == 8 * 16 + 16 * 16
    assert loc.fraction() == pytest.approx(loc.count() / loc.numel())
    assert loc.counts_by_layer() == {
        0: int(m["model.layers.0.mlp.down_proj.weight"].sum()),
        1: int(m["model.layers.1.self_attn.q_proj.weight"].sum()),
    }
    for name, mask in loc.masks.items():
        assert torch.equal(mask, m[name])


def test_set_algebra_and_jaccard_match_boolean_masks():
    a_masks, b_masks = masks(1, 0.3), masks(2, 0.3)
    a = Localization.from_masks(a_masks, method="a", proportion=0.3)
    b = Localization.from_masks(b_masks, method="b", proportion=0.3)
    both = either = 0
    for name in a_masks:
        x, y = a_masks[name], b_masks[name]
        assert torch.equal((a | b).masks[name], x | y)
        assert torch.equal((a & b).masks[name], x & y)
        assert torch.equal((a - b).masks[name], x & ~y)
        both += int((x & y).sum())
        either += int((x | y).sum())
    assert a.jaccard(b) == pytest.approx(both / either)
    assert a.jaccard(a) == 1.0
    assert (a | b).method == "(a | b)" and (a | b).proportion == 0.3


def test_save_and_load_round_trip(tmp_path):
    loc = Localization.from_masks(
        masks(3, 0.2),
        method="m",
        proportion=0.2,
        seed=7,
        target="gsm8k",
        controls=("race",),
        config={"k": 1},
    )
    loaded = Localization.load(loc.save(tmp_path / "a.safetensors"))
    assert loaded.jaccard(loc) == 1.0
    assert loaded.metadata() == loc.metadata()
    assert not list(tmp_path.glob("*.partial"))


def test_loading_a_foreign_file_names_the_problem(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(LocatorError, match="not a locator localization file"):
        Localization.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_text("junk")
    with pytest.raises(LocatorError, match="not a safetensors file"):
        Localization.load(tmp_path / "junk.safetensors")
    with pytest.raises(LocatorError, match="does not exist"):
        Localization.load(tmp_path / "missing.safetensors")


def test_read_texts_reads_jsonl_and_names_bad_records(tmp_path):
    from locator.data import read_texts

    (tmp_path / "ok.jsonl").write_text('{"text": "a b"}\n\n{"text": "c"}\n')
    assert read_texts(tmp_path / "ok.jsonl") == ["a b", "c"]
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(LocatorError, match="record 2 has no string 'text' field"):
        read_texts(tmp_path / "bad.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(LocatorError, match="broken.jsonl:2: not valid JSON"):
        read_texts(tmp_path / "broken.jsonl")
