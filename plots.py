"""
Line charts drawn with Pillow (no plotting dependency for a few charts): a training log against
step (`eval.py --plot-log out/lm_log.txt`: the loss, and the in-context scores whose sudden rise
marks the step where copying from context appears), and eval.py's results against shots.
"""

from pathlib import Path

from PIL import Image, ImageDraw

from checkpoint import read_log
from data import InputError

PLOT_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf"]


def draw_panel(draw, box, title, series, lo=0.0, hi=1.0, x_label=""):
    """One chart in `box` (x0, y0, x1, y1): a frame, a title, the y limits, and each series
    (label, colour, points) as a line with its label top-left. A point is (x, y) or (x, y, low,
    high), the last two drawn as an error bar. x runs over the points' range; when there are few
    distinct x values, each is marked."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline="black")
    draw.text((x0, y0 - 20), title, fill="black")
    draw.text((x0 - 40, y0), f"{hi:.2f}", fill="black")
    draw.text((x0 - 40, y1 - 10), f"{lo:.2f}", fill="black")
    xs = sorted({p[0] for _, _, points in series for p in points})
    if not xs:
        return
    span = (xs[-1] - xs[0]) or 1
    margin = 0.05 * (x1 - x0)
    px = lambda x: x0 + margin + (x1 - x0 - 2 * margin) * (x - xs[0]) / span
    py = lambda y: y1 - (y1 - y0) * (min(max(y, lo), hi) - lo) / (hi - lo)
    for x in (xs if len(xs) <= 8 else xs[:1] + xs[-1:]):
        draw.text((px(x) - 4, y1 + 4), f"{x:g}", fill="black")
    draw.text((x1 - 8 * len(x_label), y1 + 18), x_label, fill="black")
    for i, (label, colour, points) in enumerate(series):
        line = [(px(p[0]), py(p[1])) for p in points]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for p, (x, y) in zip(points, line):
            if len(p) == 4:  # an interval
                draw.line([(x, py(p[2])), (x, py(p[3]))], fill=colour, width=1)
            if len(points) <= 20:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((x0 + 10, y0 + 8 + 14 * i), label, fill=colour)


def new_canvas(n_panels, width=450, height=380):
    img = Image.new("RGB", (width * n_panels, height), "white")
    boxes = [(60 + p * width, 40, (p + 1) * width - 20, height - 50) for p in range(n_panels)]
    return img, ImageDraw.Draw(img), boxes


def save_png(img, png_path):
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    img.save(png_path)
    return png_path


def plot_log(log_path, png_path, keys=("loss", "val_loss", "copy", "bind2_direct", "bind5_direct",
                                         "bind2_paper", "bind5_paper", "bind2_heldback")):
    """Draw the log's series against step: loss on a left panel, in-context scores on the right."""
    rows = read_log(log_path)
    series = {k: [(r["step"], r[k]) for r in rows if k in r] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        raise InputError(f"{log_path}: no {', '.join(keys)} values to plot")
    colour = {k: PLOT_COLOURS[i % len(PLOT_COLOURS)] for i, k in enumerate(series)}
    img, draw, boxes = new_canvas(2)
    losses = [k for k in series if "loss" in k]
    values = [v for k in losses for _, v in series[k]] or [0.0, 1.0]
    lo, hi = min(values), max(values)
    draw_panel(draw, boxes[0], "loss", [(k, colour[k], series[k]) for k in losses], lo, hi if hi > lo else lo + 1,
               x_label="step")
    draw_panel(draw, boxes[1], "in-context score", [(k, colour[k], series[k]) for k in series if k not in losses],
               x_label="step")
    return save_png(img, png_path)


def plot_results(result, png_path):
    """Binding accuracy against inner shots (each fully evaluated model, 2- and 5-way, task
    induction, the default layout), and VQA and OKVQA accuracy against shots (every model), with
    95% intervals."""
    img, draw, boxes = new_canvas(3)
    models = list(result["models"].items())
    colour = {name: PLOT_COLOURS[i % len(PLOT_COLOURS)] for i, (name, _) in enumerate(models)}
    point = lambda x, cell: (x, cell["acc"], *cell["ci"])
    binding, ways_shown = [], set()
    for name, m in models:
        for row in m["results"].get("binding", []):
            cells = [c for c in row["cells"] if c["task_induction"] and c["repeats"] == 0]
            headline = (row["names"], row.get("templates", "paper"), row.get("kinds", "heldout")) == ("nonsense", "paper", "heldout")
            if headline and row["layout"] == result["layout"] and len(cells) > 1:
                binding.append((f"{name} {row['ways']}-way", PLOT_COLOURS[len(binding) % len(PLOT_COLOURS)],
                                [point(c["inner_shots"], c) for c in cells]))
                ways_shown.add(row["ways"])
    binding += [(f"chance {w}-way", "#999999", [(1, 1 / w), (5, 1 / w)]) for w in sorted(ways_shown)]
    draw_panel(draw, boxes[0], f"binding, {result['layout']} layout, task induction", binding,
               x_label="inner shots")
    for box, task, label in ((boxes[1], "vqa", "VQA"), (boxes[2], "okvqa", "OKVQA")):
        series = [(name, colour[name], [point(c["shots"], c) for c in m["results"][task]])
                  for name, m in models if task in m["results"]]
        draw_panel(draw, box, f"{label} accuracy", series, x_label="shots")
    return save_png(img, png_path)
