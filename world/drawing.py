"""
Chapter 1, drawing: the colours, the backgrounds, and how each of the 29 kinds of thing is drawn.

Frozen's vision encoder sees photographs (Conceptual Captions in training; VQAv2, OKVQA and
miniImageNet in evaluation). None of that can be downloaded at run time, so here every image is
drawn with Pillow primitives: each kind is a short function of ellipses, rectangles, polygons and
lines in unit coordinates, given a Pen that carries the object's colour. This file holds only how
things look on the page; which kinds there are, their words and their facts are in scenes.py.
At the end, `draw_sheet` lays many images out on one PNG, to look at them.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# ----------------------------------------------------------------------------------------------
# Colours and backgrounds

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 210, 30),
    "green": (50, 150, 50),
    "blue": (40, 90, 215),
    "purple": (135, 55, 175),
    "pink": (245, 135, 190),
    "brown": (125, 75, 35),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "grey": (135, 135, 135),
}
ANY_COLOUR = tuple(COLOURS)

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "sky": (175, 205, 240),
    "grass": (165, 210, 145),
    "sand": (230, 215, 170),
    "snow": (238, 238, 238),
    "stone": (185, 180, 170),
    "night": (30, 35, 65),
    "dusk": (95, 70, 115),
}
MIN_CONTRAST = 110  # RGB distance between a background and every object colour on it

# fixed colours of parts that do not take the object's colour
CLEAR = (0, 0, 0, 0)
INK = (20, 20, 20)
STEM = (110, 70, 30)
LEAF = (40, 140, 40)
GLASS = (170, 215, 245)
CREAM = (240, 230, 205)
FLAME = (250, 170, 20)


def _shade(c, f):
    return tuple(int(v * f) for v in c)


def _tint(c, f):
    return tuple(int(v + (255 - v) * f) for v in c)


def _rgba(c):
    return c if len(c) == 4 else (*c, 255)


def _arc(a0, a1, n):
    """n angles in radians, evenly from a0 to a1 degrees."""
    return [math.radians(a0 + (a1 - a0) * i / (n - 1)) for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Drawing: each kind draws itself with a Pen in unit coordinates, (0, 0) the top-left and (1, 1)
# the bottom-right of the object's box. The Pen maps them onto a supersampled transparent tile.


class Pen:
    def __init__(self, image: Image.Image, box: float, margin: float, colour):
        self.draw = ImageDraw.Draw(image)
        self.box, self.margin = box, margin
        self.main = colour
        self.dark = _shade(colour, 0.55)
        self.light = _tint(colour, 0.55)
        # outline: darker than the fill, except for dark fills where a darker edge would vanish
        self.edge = _shade(colour, 0.5) if sum(colour) > 150 else _tint(colour, 0.35)
        self.w = max(1, round(box * 0.035))

    def xy(self, x, y):
        return (self.margin + x * self.box, self.margin + y * self.box)

    def _fill(self, fill):
        return _rgba(self.main if fill is None else fill)

    def _outline(self, edge):
        if edge is False:
            return None
        return _rgba(self.edge if edge is True else edge)

    def ellipse(self, cx, cy, rx, ry=None, fill=None, edge=True):
        ry = rx if ry is None else ry
        box = [self.xy(cx - rx, cy - ry), self.xy(cx + rx, cy + ry)]
        self.draw.ellipse(box, fill=self._fill(fill), outline=self._outline(edge), width=self.w)

    def rect(self, x0, y0, x1, y1, fill=None, edge=True):
        box = [self.xy(x0, y0), self.xy(x1, y1)]
        self.draw.rectangle(box, fill=self._fill(fill), outline=self._outline(edge), width=self.w)

    def poly(self, points, fill=None, edge=True):
        pts = [self.xy(x, y) for x, y in points]
        self.draw.polygon(pts, fill=self._fill(fill), outline=self._outline(edge), width=self.w)

    def line(self, points, fill=None, width=0.04):
        pts = [self.xy(x, y) for x, y in points]
        w = max(1, round(width * self.box))
        self.draw.line(pts, fill=_rgba(self.edge if fill is None else fill), width=w, joint="curve")

    def dome(self, x0, y0, x1, y1, fill=None, edge=True):
        box = [self.xy(x0, y0), self.xy(x1, y1)]
        self.draw.pieslice(box, 180, 360, fill=self._fill(fill), outline=self._outline(edge), width=self.w)

    def blob(self, circles, fill=None):
        """Overlapping circles with one outline around the union (clouds, apples)."""
        grow = self.w / self.box
        for cx, cy, r in circles:
            self.ellipse(cx, cy, r + grow, fill=self.edge, edge=False)
        for cx, cy, r in circles:
            self.ellipse(cx, cy, r, fill=fill, edge=False)


def draw_apple(p: Pen):
    p.blob([(0.38, 0.58, 0.3), (0.62, 0.58, 0.3), (0.5, 0.66, 0.3)])
    p.line([(0.5, 0.34), (0.54, 0.1)], fill=STEM, width=0.06)
    p.poly([(0.54, 0.2), (0.68, 0.1), (0.82, 0.16), (0.68, 0.24)], fill=LEAF)
    p.ellipse(0.35, 0.5, 0.05, 0.09, fill=p.light, edge=False)


def draw_banana(p: Pen):
    outer = [(0.5 + 0.46 * math.cos(t), 0.15 + 0.62 * math.sin(t)) for t in _arc(20, 160, 14)]
    inner = [(0.5 + 0.4 * math.cos(t), 0.15 + 0.42 * math.sin(t)) for t in _arc(160, 20, 14)]
    p.poly(outer + inner)
    p.line([outer[0], (0.97, 0.34)], fill=STEM, width=0.06)
    p.ellipse(outer[-1][0], outer[-1][1], 0.03, fill=STEM, edge=False)


def draw_carrot(p: Pen):
    for tip in [(0.34, 0.04), (0.5, 0.02), (0.66, 0.04)]:
        p.line([(0.5, 0.28), tip], fill=LEAF, width=0.06)
    p.poly([(0.3, 0.26), (0.7, 0.26), (0.5, 0.97)])
    for y in (0.42, 0.58, 0.74):
        p.line([(0.5 - (0.97 - y) * 0.22, y), (0.5, y + 0.03)], width=0.03)


def draw_mushroom(p: Pen):
    p.rect(0.38, 0.45, 0.62, 0.9, fill=CREAM, edge=(150, 130, 100))
    p.dome(0.06, 0.1, 0.94, 0.82)
    spot = (250, 250, 250) if p.main != COLOURS["white"] else (150, 90, 40)
    for cx, cy, r in [(0.3, 0.35, 0.07), (0.52, 0.22, 0.08), (0.72, 0.36, 0.06), (0.5, 0.39, 0.045)]:
        p.ellipse(cx, cy, r, fill=spot, edge=False)


def draw_fish(p: Pen):
    p.poly([(0.66, 0.5), (0.96, 0.26), (0.88, 0.5), (0.96, 0.74)])
    p.poly([(0.32, 0.34), (0.48, 0.16), (0.6, 0.34)], fill=p.dark)
    p.ellipse(0.43, 0.5, 0.33, 0.21)
    p.line([(0.58, 0.36), (0.54, 0.5), (0.58, 0.64)], width=0.03)
    p.ellipse(0.24, 0.45, 0.055, fill=(250, 250, 250), edge=False)
    p.ellipse(0.23, 0.45, 0.028, fill=INK, edge=False)


def draw_bird(p: Pen):
    for x in (0.42, 0.52):
        p.line([(x, 0.72), (x - 0.02, 0.92)], fill=(200, 120, 30), width=0.035)
    p.poly([(0.32, 0.55), (0.04, 0.42), (0.08, 0.7)])
    p.ellipse(0.46, 0.58, 0.27, 0.19)
    p.ellipse(0.72, 0.38, 0.14)
    beak = FLAME if p.main != COLOURS["orange"] else COLOURS["yellow"]
    p.poly([(0.84, 0.33), (0.98, 0.4), (0.84, 0.45)], fill=beak)
    p.poly([(0.3, 0.5), (0.58, 0.5), (0.36, 0.74)], fill=p.dark)
    p.ellipse(0.75, 0.35, 0.03, fill=INK, edge=False)


def draw_cat(p: Pen):
    p.line([(0.7, 0.88), (0.9, 0.7), (0.86, 0.48)], width=0.07)
    p.ellipse(0.5, 0.7, 0.26, 0.24)
    p.poly([(0.3, 0.3), (0.32, 0.06), (0.47, 0.2)])
    p.poly([(0.7, 0.3), (0.68, 0.06), (0.53, 0.2)])
    p.ellipse(0.5, 0.36, 0.23, 0.2)
    eye = (120, 200, 60)
    p.ellipse(0.41, 0.33, 0.045, fill=eye, edge=INK)
    p.ellipse(0.59, 0.33, 0.045, fill=eye, edge=INK)
    p.poly([(0.46, 0.42), (0.54, 0.42), (0.5, 0.46)], fill=(240, 130, 160), edge=False)
    whisker = (60, 60, 60) if sum(p.main) > 200 else (220, 220, 220)
    for dy in (-0.03, 0.03):
        p.line([(0.36, 0.45), (0.14, 0.43 + 2 * dy)], fill=whisker, width=0.015)
        p.line([(0.64, 0.45), (0.86, 0.43 + 2 * dy)], fill=whisker, width=0.015)


def draw_frog(p: Pen):
    p.ellipse(0.2, 0.82, 0.16, 0.08)
    p.ellipse(0.8, 0.82, 0.16, 0.08)
    p.ellipse(0.5, 0.62, 0.36, 0.26)
    for x in (0.31, 0.69):
        p.ellipse(x, 0.36, 0.12)
        p.ellipse(x, 0.35, 0.075, fill=(250, 250, 250), edge=False)
        p.ellipse(x, 0.35, 0.038, fill=INK, edge=False)
    p.line([(0.32, 0.66), (0.5, 0.72), (0.68, 0.66)], width=0.03)


def draw_snake(p: Pen):
    pts = [(0.06 + 0.76 * t, 0.52 + 0.22 * math.sin(t * 3 * math.pi)) for t in np.linspace(0, 1, 24)]
    p.line(pts, fill=p.edge, width=0.19)
    p.line(pts, fill=p.main, width=0.13)
    for x, y in pts[2:-1:3]:
        p.line([(x - 0.01, y - 0.045), (x + 0.01, y + 0.045)], fill=p.dark, width=0.04)
    hx, hy = pts[-1]
    p.line([(hx + 0.1, hy), (hx + 0.17, hy - 0.02)], fill=(220, 30, 30), width=0.02)
    p.ellipse(hx + 0.04, hy, 0.11, 0.085)
    p.ellipse(hx + 0.08, hy - 0.025, 0.022, fill=INK, edge=False)


def draw_ladybird(p: Pen):
    for y in (0.45, 0.62, 0.79):
        p.line([(0.2, y), (0.8, y)], fill=INK, width=0.03)
    p.ellipse(0.5, 0.24, 0.17, 0.12, fill=INK)
    p.ellipse(0.5, 0.6, 0.32, 0.32)
    p.line([(0.5, 0.3), (0.5, 0.91)], fill=INK, width=0.03)
    for cx, cy, r in [(0.36, 0.48, 0.06), (0.64, 0.48, 0.06), (0.34, 0.7, 0.065), (0.66, 0.7, 0.065),
                      (0.42, 0.84, 0.04), (0.58, 0.84, 0.04)]:
        p.ellipse(cx, cy, r, fill=INK, edge=False)


def draw_butterfly(p: Pen):
    for side in (-1, 1):
        p.ellipse(0.5 + side * 0.22, 0.34, 0.21, 0.2)
        p.ellipse(0.5 + side * 0.17, 0.68, 0.14, 0.15)
        p.ellipse(0.5 + side * 0.26, 0.32, 0.07, fill=p.light, edge=False)
        p.ellipse(0.5 + side * 0.18, 0.7, 0.05, fill=p.light, edge=False)
        p.line([(0.5, 0.26), (0.5 + side * 0.12, 0.06)], fill=INK, width=0.025)
        p.ellipse(0.5 + side * 0.12, 0.06, 0.025, fill=INK, edge=False)
    p.ellipse(0.5, 0.52, 0.045, 0.3, fill=INK, edge=False)


def draw_snail(p: Pen):
    body = _tint(p.main, 0.45) if p.main != COLOURS["white"] else (200, 190, 170)
    p.ellipse(0.52, 0.82, 0.42, 0.09, fill=body)
    p.ellipse(0.86, 0.68, 0.07, 0.15, fill=body)
    for tip in [(0.8, 0.42), (0.95, 0.44)]:
        p.line([(0.86, 0.58), tip], fill=_shade(body, 0.6), width=0.025)
        p.ellipse(tip[0], tip[1], 0.022, fill=INK, edge=False)
    p.ellipse(0.45, 0.53, 0.3)
    for cx, cy, r in [(0.47, 0.55, 0.2), (0.49, 0.57, 0.12), (0.5, 0.58, 0.05)]:
        p.ellipse(cx, cy, r, edge=p.dark)


def draw_car(p: Pen):
    p.poly([(0.24, 0.43), (0.33, 0.2), (0.68, 0.2), (0.8, 0.43)])
    p.poly([(0.3, 0.41), (0.37, 0.25), (0.48, 0.25), (0.48, 0.41)], fill=GLASS)
    p.poly([(0.52, 0.41), (0.52, 0.25), (0.65, 0.25), (0.73, 0.41)], fill=GLASS)
    p.rect(0.05, 0.41, 0.95, 0.72)
    p.rect(0.88, 0.47, 0.95, 0.53, fill=(250, 230, 120), edge=False)
    for x in (0.27, 0.73):
        p.ellipse(x, 0.74, 0.13, fill=INK, edge=INK)
        p.ellipse(x, 0.74, 0.05, fill=(170, 170, 170), edge=False)


def draw_boat(p: Pen):
    p.line([(0.5, 0.06), (0.5, 0.62)], fill=STEM, width=0.04)
    sail = CREAM if p.main != COLOURS["white"] else (210, 200, 170)
    p.poly([(0.54, 0.08), (0.54, 0.56), (0.9, 0.56)], fill=sail, edge=(120, 110, 90))
    p.poly([(0.46, 0.18), (0.46, 0.56), (0.18, 0.56)], fill=sail, edge=(120, 110, 90))
    p.poly([(0.03, 0.6), (0.97, 0.6), (0.8, 0.84), (0.2, 0.84)])


def draw_plane(p: Pen):
    p.poly([(0.44, 0.46), (0.58, 0.46), (0.5, 0.22), (0.44, 0.22)], fill=p.dark)
    p.poly([(0.12, 0.5), (0.06, 0.2), (0.24, 0.46)])
    p.ellipse(0.5, 0.5, 0.45, 0.11)
    p.poly([(0.38, 0.53), (0.6, 0.53), (0.44, 0.88), (0.34, 0.88)])
    for i in range(8):
        p.ellipse(0.3 + 0.07 * i, 0.47, 0.022, fill=GLASS, edge=False)
    p.poly([(0.86, 0.44), (0.93, 0.47), (0.86, 0.5)], fill=GLASS, edge=False)


def draw_rocket(p: Pen):
    p.poly([(0.41, 0.8), (0.5, 0.99), (0.59, 0.8)], fill=FLAME, edge=(230, 60, 20))
    for side in (-1, 1):
        p.poly([(0.5 + side * 0.12, 0.54), (0.5 + side * 0.3, 0.86), (0.5 + side * 0.12, 0.8)], fill=p.dark)
    p.rect(0.37, 0.3, 0.63, 0.82)
    p.poly([(0.37, 0.3), (0.5, 0.02), (0.63, 0.3)], fill=p.dark)
    p.ellipse(0.5, 0.46, 0.075, fill=GLASS, edge=(90, 90, 90))


def draw_hammer(p: Pen):
    p.rect(0.44, 0.3, 0.56, 0.96, fill=(170, 115, 60), edge=STEM)
    p.rect(0.16, 0.08, 0.84, 0.32)
    p.rect(0.16, 0.08, 0.3, 0.32, fill=p.dark)


def draw_key(p: Pen):
    p.rect(0.45, 0.38, 0.55, 0.95)
    p.rect(0.55, 0.72, 0.7, 0.79)
    p.rect(0.55, 0.85, 0.66, 0.92)
    p.ellipse(0.5, 0.24, 0.21)
    p.ellipse(0.5, 0.24, 0.09, fill=CLEAR)


def draw_cup(p: Pen):
    p.ellipse(0.74, 0.55, 0.16, 0.18)
    p.ellipse(0.74, 0.55, 0.08, 0.1, fill=CLEAR)
    p.poly([(0.16, 0.28), (0.72, 0.28), (0.65, 0.88), (0.23, 0.88)])
    p.ellipse(0.44, 0.28, 0.28, 0.07, fill=p.dark)


def draw_sun(p: Pen):
    for i in range(12):
        t = 2 * math.pi * i / 12
        p.line([(0.5 + 0.3 * math.cos(t), 0.5 + 0.3 * math.sin(t)),
                (0.5 + 0.48 * math.cos(t), 0.5 + 0.48 * math.sin(t))], fill=p.main, width=0.06)
    p.ellipse(0.5, 0.5, 0.28)


def draw_moon(p: Pen):
    p.ellipse(0.48, 0.5, 0.4)
    p.ellipse(0.66, 0.4, 0.34, fill=CLEAR, edge=False)
    p.ellipse(0.28, 0.6, 0.05, fill=p.dark, edge=False)
    p.ellipse(0.38, 0.78, 0.04, fill=p.dark, edge=False)


def draw_star(p: Pen):
    pts = []
    for i in range(10):
        r = 0.48 if i % 2 == 0 else 0.2
        t = -math.pi / 2 + math.pi * i / 5
        pts.append((0.5 + r * math.cos(t), 0.53 + r * math.sin(t)))
    p.poly(pts)


def draw_cloud(p: Pen):
    p.blob([(0.3, 0.58, 0.19), (0.5, 0.44, 0.24), (0.7, 0.56, 0.2), (0.45, 0.66, 0.17), (0.62, 0.68, 0.15)])


def draw_balloon(p: Pen):
    p.line([(0.5, 0.72), (0.44, 0.82), (0.54, 0.9), (0.48, 0.99)], fill=(80, 80, 80), width=0.02)
    p.poly([(0.46, 0.76), (0.54, 0.76), (0.5, 0.68)], fill=p.dark)
    p.ellipse(0.5, 0.38, 0.3, 0.34)
    p.ellipse(0.4, 0.26, 0.06, 0.09, fill=p.light, edge=False)


def draw_kite(p: Pen):
    tail = [(0.5, 0.7), (0.42, 0.8), (0.56, 0.88), (0.46, 0.98)]
    p.line(tail, fill=(70, 70, 70), width=0.02)
    bow = COLOURS["red"] if p.main != COLOURS["red"] else COLOURS["yellow"]
    for x, y in tail[1:]:
        p.poly([(x - 0.07, y - 0.04), (x + 0.07, y + 0.04), (x + 0.07, y - 0.04), (x - 0.07, y + 0.04)], fill=bow, edge=False)
    p.poly([(0.5, 0.03), (0.8, 0.34), (0.5, 0.72), (0.2, 0.34)])
    p.poly([(0.5, 0.03), (0.8, 0.34), (0.5, 0.34)], fill=p.light, edge=False)
    p.poly([(0.5, 0.34), (0.2, 0.34), (0.5, 0.72)], fill=p.light, edge=False)
    p.line([(0.5, 0.03), (0.5, 0.72)], width=0.025)
    p.line([(0.2, 0.34), (0.8, 0.34)], width=0.025)


def draw_house(p: Pen):
    p.rect(0.17, 0.45, 0.83, 0.94)
    p.poly([(0.06, 0.48), (0.5, 0.08), (0.94, 0.48)], fill=_shade(p.main, 0.6) if sum(p.main) > 150 else (150, 60, 40))
    p.rect(0.43, 0.66, 0.58, 0.94, fill=STEM)
    for x in (0.24, 0.64):
        p.rect(x, 0.55, x + 0.13, 0.68, fill=GLASS)
        p.line([(x + 0.065, 0.55), (x + 0.065, 0.68)], width=0.02)


def draw_tower(p: Pen):
    p.rect(0.29, 0.24, 0.71, 0.97)
    for x in (0.25, 0.445, 0.64):
        p.rect(x, 0.06, x + 0.11, 0.24)
    p.rect(0.25, 0.18, 0.75, 0.27)
    p.rect(0.44, 0.38, 0.56, 0.54, fill=INK, edge=False)
    p.dome(0.42, 0.72, 0.58, 0.86, fill=STEM, edge=False)
    p.rect(0.42, 0.79, 0.58, 0.97, fill=STEM, edge=False)


def draw_square(p: Pen):
    p.rect(0.12, 0.12, 0.88, 0.88)


def draw_triangle(p: Pen):
    p.poly([(0.5, 0.08), (0.94, 0.86), (0.06, 0.86)])


# ----------------------------------------------------------------------------------------------
# A contact sheet, to look at what the drawings become (python -m world --sheet, sample.py)


def draw_sheet(items, path: str, cols=6):
    """A grid PNG of (image, text) pairs, images enlarged to at least 128 px, text wrapped below."""
    cell, text_h = 160, 56
    show = max(128, items[0][0].size[0])
    rows = math.ceil(len(items) / cols)
    sheet = Image.new("RGB", (cols * cell, rows * (show + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, (image, text) in enumerate(items):
        x, y = (i % cols) * cell, (i // cols) * (show + text_h)
        sheet.paste(image.resize((show, show), Image.Resampling.NEAREST), (x + (cell - show) // 2, y))
        draw.multiline_text((x + 4, y + show + 2), "\n".join(textwrap.wrap(text, 25)[:4]), fill=(0, 0, 0), font=font)
    sheet.save(path)
    return path
