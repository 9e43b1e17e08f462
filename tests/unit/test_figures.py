"""The report's figures: every method distinguishable, tick labels that never touch, heat maps."""

from pathlib import Path

import pytest

from locator.bench import figures


def test_no_two_methods_share_colour_and_marker():
    labels = [f"method-{i}" for i in range(20)] + ["random-0"]
    found = figures.styles(labels, {"method-3": "random-0"})
    methods = [found[label] for label in labels[:20]]
    assert len({(s.color, s.marker) for s in methods}) == 20
    baseline = found["random-0"]
    assert (baseline.color, baseline.marker, baseline.open) == (
        found["method-3"].color,
        found["method-3"].marker,
        True,
    )


@pytest.mark.parametrize(
    "values",
    [
        [0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15],  # the paper's grid
        [0.009, 0.01, 0.011, 0.048, 0.05, 0.1, 0.13, 0.15],  # fractions edited bunch up
    ],
)
def test_log_axis_tick_labels_never_overlap(values):
    figure = figures._figure(1)
    axis = figure.add_subplot()
    axis.plot(values, range(len(values)), marker="o")
    figures._log_fraction_axis(axis, values, "fraction edited")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = [
        label.get_window_extent(renderer)
        for label in axis.get_xticklabels()
        if label.get_text() and label.get_visible()
    ]
    assert len(boxes) >= 3
    boxes.sort(key=lambda box: box.x0)
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:], strict=False)), boxes


def test_the_matrix_heat_map_is_annotated(tmp_path: Path):
    written = figures.matrix_figure(
        [[-0.8, 0.05, None], [0.1, -0.5, 0.0], [0.02, 0.01, -0.3]],
        ["handbook-en", "handbook-fr", "gsm8k"],
        "wanda, K = 5%",
        tmp_path / "matrix",
    )
    assert [p.suffix for p in written] == [".png", ".svg"]
    svg = written[1].read_text()
    assert "-0.80" in svg and "+0.05" in svg
