"""Checks that a matplotlib figure reads as saved: nothing clipped, nothing hidden, text legible.

The figures are saved with a plain `savefig` (MLflow's `log_figure`, the model card's PNGs), so
what a reader sees is the figure's own canvas: every label has to fit inside it without
`bbox_inches="tight"`. Each check draws the figure once with Agg and returns what it found
wrong, one line per problem, so a failing assertion names the artist.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backend_bases import RendererBase
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.legend import Legend
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.transforms import BboxBase

TOLERANCE_PX = 0.5
"""Sub-pixel rounding in a text's extent is not clipping."""
MIN_CONTRAST = 4.5
"""WCAG 2's contrast ratio for normal text (AA)."""


def draw(figure: Figure) -> RendererBase:
    """Lay the figure out and draw it as `savefig` would, returning the renderer."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def _ticks_shown(axis: Axis) -> Iterator[Text]:
    low, high = sorted(axis.get_view_interval())
    span = (high - low) * 1e-9
    for tick in axis.get_major_ticks():
        if low - span <= tick.get_loc() <= high + span:
            yield from (tick.label1, tick.label2)


def _axes_texts(ax: Axes) -> Iterator[tuple[str, Text]]:
    # An axes' own texts: its titles (centre, left, right) and its annotations.
    for child in ax.get_children():
        if isinstance(child, Text):
            yield "title or text", child
    yield "x label", ax.xaxis.label
    yield "y label", ax.yaxis.label
    for label in _ticks_shown(ax.xaxis):
        yield "x tick label", label
    for label in _ticks_shown(ax.yaxis):
        yield "y tick label", label
    legend = ax.get_legend()
    if legend is not None:
        for text in legend.get_texts():
            yield "legend", text
        yield "legend title", legend.get_title()


def _shown(text: Text) -> bool:
    return text.get_visible() and bool(text.get_text().strip())


def _inside(box: BboxBase, frame: BboxBase) -> bool:
    return (
        box.x0 >= frame.x0 - TOLERANCE_PX
        and box.y0 >= frame.y0 - TOLERANCE_PX
        and box.x1 <= frame.x1 + TOLERANCE_PX
        and box.y1 <= frame.y1 + TOLERANCE_PX
    )


def clipped_texts(figure: Figure) -> list[str]:
    """Every shown text (titles, axis and tick labels, annotations, legends) that leaves the
    figure's canvas, and every legend box that does."""
    renderer = draw(figure)
    frame = figure.bbox
    problems: list[str] = []
    for index, ax in enumerate(figure.axes):
        for where, text in _axes_texts(ax):
            if not _shown(text):
                continue
            box = text.get_window_extent(renderer)
            if not _inside(box, frame):
                problems.append(
                    f"axes {index} {where} {text.get_text()!r} at {_pixels(box)} leaves the "
                    f"figure {_pixels(frame)}"
                )
    for where, legend in _legends(figure):
        if not _inside(legend.get_window_extent(renderer), frame):
            problems.append(f"{where} legend box leaves the figure {_pixels(frame)}")
    for text in (child for child in figure.get_children() if isinstance(child, Text)):
        if _shown(text) and not _inside(text.get_window_extent(renderer), frame):
            problems.append(f"figure text {text.get_text()!r} leaves the figure")
    for legend in figure.legends:
        for text in [*legend.get_texts(), legend.get_title()]:
            if _shown(text) and not _inside(text.get_window_extent(renderer), frame):
                problems.append(f"figure legend text {text.get_text()!r} leaves the figure")
    return problems


def _legends(figure: Figure) -> Iterator[tuple[str, Legend]]:
    for index, ax in enumerate(figure.axes):
        legend = ax.get_legend()
        if legend is not None:
            yield f"axes {index}", legend
    for legend in figure.legends:
        yield "figure", legend


def crowded_tick_labels(figure: Figure) -> list[str]:
    """Every pair of neighbouring tick labels on one axis that overlap each other."""
    renderer = draw(figure)
    problems: list[str] = []
    for index, ax in enumerate(figure.axes):
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            labels = [label for label in _ticks_shown(axis) if _shown(label)]
            boxes = [(label.get_text(), label.get_window_extent(renderer)) for label in labels]
            for (first, one), (second, other) in zip(boxes, boxes[1:], strict=False):
                if one.overlaps(other):
                    problems.append(f"axes {index} {name} tick labels {first!r} and {second!r}")
    return problems


def legends_over_bars(figure: Figure) -> list[str]:
    """Every bar (a non-empty rectangle of a bar container) that a legend box overlaps."""
    renderer = draw(figure)
    problems: list[str] = []
    for where, legend in _legends(figure):
        box = legend.get_window_extent(renderer)
        for index, ax in enumerate(figure.axes):
            for container in ax.containers:
                for bar in container:
                    if not isinstance(bar, Rectangle) or bar.get_height() == 0:
                        continue
                    extent = bar.get_window_extent(renderer)
                    if extent.width > 0 and extent.height > 0 and box.overlaps(extent):
                        problems.append(
                            f"the {where} legend {_pixels(box)} covers a bar "
                            f"{container.get_label()!r} of axes {index} at {_pixels(extent)}"
                        )
    return problems


def illegible_cell_texts(figure: Figure) -> list[str]:
    """Every text drawn on an image cell (a heatmap count) whose contrast with the cell's colour
    is below `MIN_CONTRAST`."""
    draw(figure)
    problems: list[str] = []
    for ax in figure.axes:
        images = [image for image in ax.get_images() if isinstance(image, AxesImage)]
        if not images:
            continue
        image = images[-1]
        values = np.asarray(image.get_array())
        for text in ax.texts:
            if not _shown(text):
                continue
            x, y = text.get_position()
            row, col = int(round(y)), int(round(x))
            if not (0 <= row < values.shape[0] and 0 <= col < values.shape[1]):
                continue
            cell = image.to_rgba(values[row, col])
            ratio = contrast_ratio(to_rgba(text.get_color()), tuple(cell))
            if ratio < MIN_CONTRAST:
                problems.append(
                    f"{text.get_text()!r} in cell ({row}, {col}): contrast {ratio:.1f} < "
                    f"{MIN_CONTRAST}"
                )
    return problems


def problems(figure: Figure) -> list[str]:
    """All of the checks above."""
    return [
        *clipped_texts(figure),
        *crowded_tick_labels(figure),
        *legends_over_bars(figure),
        *illegible_cell_texts(figure),
    ]


def relative_luminance(rgba: tuple[float, ...]) -> float:
    """WCAG 2's relative luminance of an sRGB colour (alpha ignored)."""
    channels = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]


def contrast_ratio(first: tuple[float, ...], second: tuple[float, ...]) -> float:
    """WCAG 2's contrast ratio of two colours, from 1 (same) to 21 (black on white)."""
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def _pixels(box: BboxBase) -> str:
    return f"({box.x0:.0f}, {box.y0:.0f})–({box.x1:.0f}, {box.y1:.0f}) px"
