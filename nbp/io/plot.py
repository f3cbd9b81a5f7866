"""Loss curves as PNG with Pillow alone (no plotting library needed): `line_chart` and `metric_series`."""
from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def metric_series(rows: list[dict[str, str]], key: str, x_key: str = "step") -> tuple[list[float], list[float]]:
    """(x, y) of the rows of a Lightning metrics.csv (`runner.read_metrics`) that logged `key`."""
    points = [(float(row[x_key]), float(row[key])) for row in rows if row.get(key) not in (None, "")]
    return [x for x, _ in points], [y for _, y in points]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
    first = math.ceil(low / step) * step
    return [round(first + i * step, 12) for i in range(int((high - first) / step + 1e-9) + 1)]


def line_chart(series: dict[str, tuple[list[float], list[float]]], path: str | Path, title: str,
               x_label: str = "step", size: tuple[int, int] = (640, 400)) -> Path:
    """One PNG with a line per named (x, y) series, axes with round ticks and a legend."""
    width, height = size
    left, right, top, bottom = 64, 16, 32, 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    drawn = {name: xy for name, xy in series.items() if xy[0]}
    xs = [x for x, _ in drawn.values() for x in x]
    ys = [y for _, y in drawn.values() for y in y if math.isfinite(y)]
    draw.text((left, 8), title, fill="black")
    if not xs or not ys:
        draw.text((left, height // 2), "no data logged", fill="black")
        return _save(image, path)
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for tick in nice_ticks(x0, x1):
        px, _ = to_pixel(tick, y0)
        draw.line([px, height - bottom, px, height - bottom + 4], fill="black")
        draw.text((px - 12, height - bottom + 6), f"{tick:g}", fill="black")
    for tick in nice_ticks(y0, y1):
        _, py = to_pixel(x0, tick)
        draw.line([left - 4, py, left, py], fill="black")
        draw.line([left + 1, py, width - right - 1, py], fill=(230, 230, 230))
        draw.text((4, py - 6), f"{tick:.4g}", fill="black")
    draw.text(((width - len(x_label) * 6) // 2, height - 16), x_label, fill="black")
    for i, (name, (x, y)) in enumerate(drawn.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = [to_pixel(a, b) for a, b in zip(x, y) if math.isfinite(b)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            draw.ellipse(_dot(points[0]), fill=colour)
        draw.text((width - right - 150, top + 6 + 14 * i), f"-- {name}", fill=colour)
    return _save(image, path)


def _dot(point: tuple[float, float], radius: float = 2.5) -> list[float]:
    return [point[0] - radius, point[1] - radius, point[0] + radius, point[1] + radius]


def _save(image: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
