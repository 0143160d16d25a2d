"""
The embedded default data: a small drawn world, its captions, a text corpus about it, and the
few-shot episodes that eval.py scores.

Frozen (Tsimpoukelli et al. 2021) trains its language model on a large web text corpus, its
vision encoder on Conceptual Captions (3M image-caption pairs), and evaluates on VQAv2, OKVQA,
miniImageNet and Visual Genome. None of that can be downloaded at run time, so this file makes
a world small enough to generate on the fly and rich enough for the paper's claims to show up:

- Kinds and drawing: 29 kinds of thing (fruits, animals, vehicles, tools, sky things, buildings,
  plain shapes) drawn with Pillow primitives. Each kind has typical colours, a shape word, part
  words and facts. Five kinds are HELD OUT: they never appear in stage-prefix training images.
- Scenes and captions: `World` is a map-style Dataset of (image, caption, scene); 1-2 groups of
  1-3 objects with colour, size, position, rotation, background and noise varied. Captions come
  from several plain-English templates, and `parse_caption` reads them back.
- Text corpus (stage lm): `text_documents` streams English about the same world: facts that are
  only ever in text (what a thing is, what it is used for, where it is found, whether it can be
  eaten, fly or swim), Q/A passages, stories, and the passages that make in-context learning
  learnable at all (naming stories, solved-example lists, copy passages, and binding passages
  written in exactly the layout of the evaluation's binding task). The held-out kinds are in the
  text: the LM knows their names and facts, only the vision side never saw them.
- Episodes: `episodes(task, n)` builds the paper's evaluations re-made on the world (captioning,
  VQA, outside-knowledge VQA, open-ended binding with nonsense or real names, Fast-VQA), plus a
  plain copy task. `as_text=True` puts a text description where each image would be, so the LM's
  in-context ability can be measured before any vision exists.

Differences from the paper's data: the images are icons, not photographs, and there are 29
kinds instead of thousands of concepts; "outside knowledge" is the handful of facts written into
the corpus; miniImageNet's held-out classes are our five held-out kinds; the corpus is generated
from templates, so it is repetitive by design and in-context skills are planted in it on purpose
(a web corpus has them for free).

Everything is deterministic: every image, document and episode gets its own random.Random seeded
from a string like "world/<seed>/<split>/<index>" (string seeds hash with SHA-512, stable across
processes), so DataLoader workers need no coordination. The global RNG is never touched.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import random
import re
import sys
import textwrap
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Iterator

import numpy as np
import torch
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


def _distance(a, b):
    return math.dist(a, b)


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


def _arc(a0, a1, n):
    return [math.radians(a0 + (a1 - a0) * i / (n - 1)) for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Kinds: what each thing looks like (for captions and paraphrases) and what is true of it (only
# ever in text). The look words are shared between kinds on purpose: a vision encoder trained on
# seen kinds learns "round", "spotted", "wings", "tail"... so an unseen kind still gets a
# distinctive caption made of attribute words instead of collapsing onto one seen kind's name.


@dataclass(frozen=True)
class Kind:
    name: str
    plural: str
    category: str  # fruit, animal, vehicle, tool, sky, building, shape
    sort: str  # the plain noun a paraphrase uses instead of the name ("a round red fruit")
    colours: tuple[str, ...]  # typical colours; ANY_COLOUR for free ones
    shape: str  # shape word, "" when none fits ("round", "long", "pointed", ...)
    parts: str  # parts phrase ("a stem", "wheels and windows")
    texture: str  # "spotted", "striped", "furry" or ""
    facts: dict  # is, use, found=(verb, place), eat, fly, swim, extra=(sentences,)
    draw: Callable[[Pen], None] = field(repr=False, compare=False)


def _kind(name, plural, category, sort, colours, shape, parts, texture, draw, *, is_, use, found,
          eat=False, fly=False, swim=False, extra=()):
    facts = dict(is_=is_, use=use, found=found, eat=eat, fly=fly, swim=swim, extra=tuple(extra))
    return Kind(name, plural, category, sort, tuple(colours), shape, parts, texture, facts, draw)


_KIND_LIST = [
    _kind("apple", "apples", "fruit", "fruit", ("red", "green", "yellow"), "round", "a stem", "", draw_apple,
          is_="a fruit", use="eating", found=("grow", "on trees"), eat=True,
          extra=("apples can be sweet or sour.", "apple juice is made from apples.")),
    _kind("banana", "bananas", "fruit", "fruit", ("yellow", "green"), "curved", "two brown tips", "", draw_banana,
          is_="a fruit", use="eating", found=("grow", "in hot places"), eat=True,
          extra=("monkeys like bananas.", "you peel a banana before you eat it.")),
    _kind("carrot", "carrots", "fruit", "vegetable", ("orange",), "pointed", "green leaves", "", draw_carrot,
          is_="a vegetable", use="eating", found=("grow", "under the ground"), eat=True,
          extra=("rabbits like carrots.", "carrots are crunchy.")),
    _kind("mushroom", "mushrooms", "fruit", "plant", ("red", "brown", "white", "orange"), "round", "a short stem",
          "spotted", draw_mushroom,
          is_="a fungus", use="cooking", found=("grow", "in forests"), eat=True,
          extra=("some mushrooms are poisonous, so pick them with care.", "mushrooms like dark and wet places.")),
    _kind("fish", "fish", "animal", "animal", ("orange", "blue", "yellow", "red", "purple", "pink", "green", "grey"),
          "long", "fins and a tail", "", draw_fish,
          is_="an animal that lives in water", use=None, found=("live", "in rivers and the sea"), eat=True, swim=True,
          extra=("fish breathe with gills.",)),
    _kind("bird", "birds", "animal", "animal", ("blue", "red", "yellow", "brown", "black", "white"), "round",
          "wings, a beak and a tail", "", draw_bird,
          is_="an animal with feathers", use=None, found=("live", "in trees"), fly=True,
          extra=("birds build nests.", "birds sing in the morning.")),
    _kind("cat", "cats", "animal", "animal", ("black", "white", "grey", "orange", "brown"), "",
          "pointed ears, whiskers and a tail", "furry", draw_cat,
          is_="a pet", use=None, found=("live", "in houses"),
          extra=("cats like milk.", "a cat says meow.", "cats chase mice.")),
    _kind("frog", "frogs", "animal", "animal", ("green", "brown", "yellow", "blue"), "wide", "big eyes and legs", "",
          draw_frog,
          is_="an animal", use=None, found=("live", "in ponds"), swim=True,
          extra=("frogs can jump far.", "a frog says ribbit.", "frogs eat flies.")),
    _kind("snake", "snakes", "animal", "animal", ("green", "brown", "yellow", "red", "black"), "long", "no legs",
          "striped", draw_snake,
          is_="an animal", use=None, found=("live", "in the grass"), swim=True,
          extra=("a snake says hiss.", "some snakes are dangerous.")),
    _kind("ladybird", "ladybirds", "animal", "insect", ("red", "orange", "yellow"), "round", "six legs", "spotted",
          draw_ladybird,
          is_="a small insect", use=None, found=("live", "in gardens"), fly=True,
          extra=("ladybirds eat tiny bugs.",)),
    _kind("butterfly", "butterflies", "animal", "insect", ("blue", "orange", "yellow", "purple", "pink", "red", "white"),
          "wide", "four wings and two antennae", "", draw_butterfly,
          is_="an insect", use=None, found=("live", "in fields of flowers"), fly=True,
          extra=("a butterfly was once a caterpillar.", "butterflies drink from flowers.")),
    _kind("snail", "snails", "animal", "animal", ("brown", "yellow", "pink", "orange", "grey"), "curly",
          "a shell and two feelers", "", draw_snail,
          is_="a small animal", use=None, found=("live", "in gardens"),
          extra=("snails move very slowly.", "a snail carries its house on its back.")),
    _kind("car", "cars", "vehicle", "vehicle", ANY_COLOUR, "long", "wheels and windows", "", draw_car,
          is_="a vehicle", use="driving", found=("are found", "on roads"),
          extra=("cars need fuel or electricity to go.",)),
    _kind("boat", "boats", "vehicle", "vehicle", ANY_COLOUR, "flat", "two sails", "", draw_boat,
          is_="a vehicle that goes on water", use="sailing", found=("are found", "on the sea"),
          extra=("boats float on water.",)),
    _kind("plane", "planes", "vehicle", "vehicle", ("white", "grey", "blue", "red"), "long", "wings and a tail", "",
          draw_plane,
          is_="a flying machine", use="travelling far", found=("are found", "at airports"), fly=True,
          extra=("planes fly above the clouds.",)),
    _kind("rocket", "rockets", "vehicle", "vehicle", ("white", "red", "grey", "blue", "orange"), "pointed",
          "fins and a round window", "", draw_rocket,
          is_="a machine that goes to space", use="going to space", found=("are found", "at launch pads"), fly=True,
          extra=("rockets are very loud.", "rockets carry people to the moon.")),
    _kind("hammer", "hammers", "tool", "tool", ("grey", "black", "red", "blue"), "long", "a handle and a heavy head",
          "", draw_hammer,
          is_="a tool", use="hitting nails", found=("are found", "in toolboxes"),
          extra=("builders use hammers every day.",)),
    _kind("key", "keys", "tool", "tool", ("yellow", "grey", "brown"), "long", "a ring and teeth", "", draw_key,
          is_="a small tool", use="opening doors", found=("are found", "in pockets"),
          extra=("if you lose your key you can not get in.",)),
    _kind("cup", "cups", "tool", "dish", ANY_COLOUR, "round", "a handle", "", draw_cup,
          is_="a dish", use="drinking", found=("are found", "in kitchens"),
          extra=("people drink tea from cups.",)),
    _kind("sun", "suns", "sky", "thing", ("yellow", "orange", "red"), "round", "rays", "", draw_sun,
          is_="a very hot ball of fire", use="giving light", found=("are seen", "in the sky"),
          extra=("the sun rises in the morning.", "the sun makes the day warm.")),
    _kind("moon", "moons", "sky", "thing", ("yellow", "white", "grey"), "curved", "two sharp points", "", draw_moon,
          is_="a big rock that goes around the earth", use=None, found=("are seen", "in the night sky"),
          extra=("the moon shines at night.",)),
    _kind("star", "stars", "sky", "thing", ("yellow", "white", "orange", "blue", "pink"), "pointed", "five points",
          "", draw_star,
          is_="a sun that is very far away", use=None, found=("are seen", "in the night sky"),
          extra=("there are more stars than anyone can count.",)),
    _kind("cloud", "clouds", "sky", "thing", ("white", "grey", "black"), "fluffy", "round bumps", "", draw_cloud,
          is_="water floating in the air", use=None, found=("are seen", "in the sky"),
          extra=("rain falls from dark clouds.",)),
    _kind("balloon", "balloons", "sky", "toy", ANY_COLOUR, "round", "a string", "", draw_balloon,
          is_="a toy filled with air", use="parties", found=("are found", "at parties"), fly=True,
          extra=("a balloon pops if you poke it.",)),
    _kind("kite", "kites", "sky", "toy", ANY_COLOUR, "flat", "a long tail with bows", "", draw_kite,
          is_="a toy that rides the wind", use="playing in the wind", found=("are seen", "in windy parks"), fly=True,
          extra=("children hold a kite by its string.",)),
    _kind("house", "houses", "building", "building", ("red", "white", "yellow", "brown", "blue", "grey"), "",
          "a roof, a door and windows", "", draw_house,
          is_="a building", use="living in", found=("are found", "in towns"),
          extra=("families live in houses.",)),
    _kind("tower", "towers", "building", "building", ("grey", "brown", "white", "yellow"), "tall", "battlements", "",
          draw_tower,
          is_="a tall building", use="looking far away", found=("are found", "in castles"),
          extra=("kings once lived near towers.",)),
    _kind("square", "squares", "shape", "shape", ANY_COLOUR, "flat", "four corners", "", draw_square,
          is_="a shape", use="drawing", found=("are found", "in maths books"),
          extra=("a square has four sides of the same length.",)),
    _kind("triangle", "triangles", "shape", "shape", ANY_COLOUR, "pointed", "three corners", "", draw_triangle,
          is_="a shape", use="drawing", found=("are found", "in maths books"),
          extra=("a triangle has three sides.",)),
]
KINDS: dict[str, Kind] = {k.name: k for k in _KIND_LIST}

# Held out from stage-prefix training (miniImageNet's unseen classes, re-made). Chosen so that
# each looks clearly different from the others and from its nearest seen kind, and so that their
# attribute words, built from words the seen kinds teach, differ from each other:
#   mushroom  round + spotted + stem    (nearest seen: apple, which is not spotted)
#   butterfly wide + four wings         (nearest seen: bird, which has a beak and a tail)
#   snail     curly + shell + feelers   (nearest seen: snake, which is long and striped)
#   rocket    pointed + fins + window   (nearest seen: plane, which is long with wings)
#   kite      flat + tail with bows     (nearest seen: balloon, which is round on a string)
HELD_OUT_KINDS: tuple[str, ...] = ("mushroom", "butterfly", "snail", "rocket", "kite")
SEEN_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k not in HELD_OUT_KINDS)
SPLITS: dict[str, tuple[str, ...]] = {"train": SEEN_KINDS, "val": SEEN_KINDS, "test": SEEN_KINDS,
                                      "heldout": HELD_OUT_KINDS}

# The evaluation's nonsense names (the paper uses "dax" and "blicket"). They must never occur in
# training text, so that binding one of them is in-context learning, not recall.
NONSENSE_NAMES: tuple[str, ...] = ("dax", "blicket", "wug", "zorp", "fep", "toma", "gazzer", "kiki", "bouba",
                                   "zib", "tufa", "modi", "pilk", "wozzle", "glorp", "snerg", "quib", "jemble",
                                   "vorp", "yarp")

# ----------------------------------------------------------------------------------------------
# Scenes

SIZES = ("small", "big")
POSITIONS = ("left", "right", "top", "bottom", "middle")
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top",
                    "bottom": "at the bottom", "middle": "in the middle"}
ANCHORS = {"left": (0.24, 0.5), "right": (0.76, 0.5), "top": (0.5, 0.24), "bottom": (0.5, 0.76),
           "middle": (0.5, 0.5)}
# object radius as a fraction of the image side, by size and by how many share the group
RADIUS = {"small": (0.125, 0.1, 0.085), "big": (0.22, 0.19, 0.16)}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
PAIRED_POSITIONS = (("left", "right"), ("right", "left"), ("top", "bottom"), ("bottom", "top"))


@dataclass
class Obj:
    kind: str
    colour: str
    size: str  # "small" | "big"
    position: str  # "left" | "right" | "top" | "bottom" | "middle"
    angle: float = 0.0  # degrees, counter-clockwise
    x: float = 0.5  # centre, fraction of the image side
    y: float = 0.5
    radius: float = 0.15
    flip: bool = False


@dataclass
class Scene:
    objects: list[Obj]
    background: str = "sky"
    noise: float = 0.0  # std of pixel noise, in 0..255 units

    def groups(self) -> list[dict]:
        """Objects that share kind, colour, size and position, in order: what a caption names."""
        out: list[dict] = []
        for o in self.objects:
            for g in out:
                if (g["kind"], g["colour"], g["size"], g["position"]) == (o.kind, o.colour, o.size, o.position):
                    g["count"] += 1
                    break
            else:
                out.append(dict(kind=o.kind, colour=o.colour, size=o.size, position=o.position, count=1))
        return out


def _group_objects(rng: random.Random, kind, colour, size, position, count) -> list[Obj]:
    r = RADIUS[size][count - 1]
    ax, ay = ANCHORS[position]
    ax, ay = ax + rng.uniform(-0.03, 0.03), ay + rng.uniform(-0.03, 0.03)
    step = max(0.3, 2.1 * r)
    if position == "middle" and count == 3:  # a small triangle, so the group stays in the middle
        offsets = [(-step / 2, step * 0.35), (step / 2, step * 0.35), (0.0, -step * 0.5)]
    else:
        along = [(i - (count - 1) / 2) * step for i in range(count)]
        vertical = position in ("left", "right")
        offsets = [(0.0, d) if vertical else (d, 0.0) for d in along]
    objs = []
    for dx, dy in offsets:
        objs.append(Obj(kind, colour, size, position, angle=rng.uniform(-25, 25),
                        x=ax + dx + rng.uniform(-0.015, 0.015), y=ay + dy + rng.uniform(-0.015, 0.015),
                        radius=r, flip=rng.random() < 0.5))
    return objs


def _pick_background(rng: random.Random, objects: list[Obj]) -> str:
    ok = [b for b, rgb in BACKGROUNDS.items()
          if all(_distance(rgb, COLOURS[o.colour]) > MIN_CONTRAST for o in objects)]
    return rng.choice(ok or list(BACKGROUNDS))


def sample_scene(rng: random.Random, kinds=SEEN_KINDS, p_two_groups=0.25, max_count=3) -> Scene:
    """One or two groups of 1..max_count identical objects, each group at its own position."""
    kinds = list(kinds)
    two = len(kinds) > 1 and rng.random() < p_two_groups
    if two:
        chosen = rng.sample(kinds, 2)
        positions = rng.choice(PAIRED_POSITIONS)
        counts = [rng.choice((1, 1, 2)) for _ in chosen]
    else:
        chosen = [rng.choice(kinds)]
        positions = [rng.choice(POSITIONS)]
        counts = [rng.choices((1, 2, 3), weights=(0.6, 0.25, 0.15))[0] if max_count >= 3 else 1]
    objects: list[Obj] = []
    for kind, position, count in zip(chosen, positions, counts):
        count = min(count, max_count)
        colour = rng.choice(KINDS[kind].colours)
        objects += _group_objects(rng, kind, colour, rng.choice(SIZES), position, count)
    return Scene(objects, _pick_background(rng, objects), rng.choice((0.0, 0.0, rng.uniform(2, 10))))


def lone_scene(rng: random.Random, kind: str, colour=None, size=None, position="middle") -> Scene:
    """A single object: what the binding and knowledge tasks show."""
    colour = colour or rng.choice(KINDS[kind].colours)
    objects = _group_objects(rng, kind, colour, size or rng.choice(SIZES), position, 1)
    return Scene(objects, _pick_background(rng, objects), rng.choice((0.0, 0.0, rng.uniform(2, 10))))


# ----------------------------------------------------------------------------------------------
# Rendering

SUPERSAMPLE = 3  # draw tiles at 3x and box-filter down: cheap anti-aliasing


def _object_tile(obj: Obj, image_size: int, rgb) -> tuple[Image.Image, int, int]:
    d = 2 * obj.radius * image_size  # the object's unit box, in output pixels
    side = math.ceil(d * 1.45) + 2  # room for the rotated corners
    tile = Image.new("RGBA", (side * SUPERSAMPLE, side * SUPERSAMPLE), CLEAR)
    box = d * SUPERSAMPLE
    KINDS[obj.kind].draw(Pen(tile, box, (side * SUPERSAMPLE - box) / 2, rgb))
    if obj.flip:
        tile = tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if obj.angle:
        # nearest is enough: the 3x box filter below smooths the stair-steps
        tile = tile.rotate(obj.angle, resample=Image.Resampling.NEAREST)
    tile = tile.reduce(SUPERSAMPLE)
    return tile, round(obj.x * image_size - side / 2), round(obj.y * image_size - side / 2)


def render(scene: Scene, image_size: int = 64, rng: random.Random | None = None) -> Image.Image:
    """Draw a scene as an RGB image. rng varies only what a caption never names (shading, noise)."""
    rng = rng or random.Random(0)
    n = image_size
    # background: the named colour with a gentle linear gradient in a random direction
    t, g = rng.uniform(0, 2 * math.pi), rng.uniform(10, 40)
    ys, xs = np.mgrid[0:n, 0:n] / n - 0.5
    ramp = (math.cos(t) * xs + math.sin(t) * ys) * g
    bg = np.asarray(BACKGROUNDS[scene.background], np.float32)[None, None, :] + ramp[..., None]
    image = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    for obj in scene.objects:
        # each object's colour wobbles a little around its named colour, never enough to change name
        rgb = tuple(int(min(255, max(0, v + rng.randint(-12, 12)))) for v in COLOURS[obj.colour])
        tile, x, y = _object_tile(obj, n, rgb)
        image.paste(tile, (x, y), tile)
    if scene.noise > 0:
        noise = np.random.default_rng(rng.getrandbits(64)).normal(0, scene.noise, (n, n, 3))
        image = Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8), "RGB")
    return image


# ----------------------------------------------------------------------------------------------
# Captions and descriptions


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def noun_phrase(kind: str, colour: str | None, size: str | None, count: int = 1) -> str:
    """'a small red apple', 'two blue cars', 'an orange carrot'."""
    k = KINDS[kind]
    words = " ".join(w for w in (size, colour, k.name if count == 1 else k.plural) if w)
    return with_article(words) if count == 1 else f"{NUMBER_WORDS[count]} {words}"


def _group_phrase(g: dict, with_size=True, with_position=True) -> str:
    np_ = noun_phrase(g["kind"], g["colour"], g["size"] if with_size else None, g["count"])
    return f"{np_} {POSITION_PHRASES[g['position']]}" if with_position else np_


def _looks_sentence(g: dict) -> str:
    """'it is round and has a stem.' Visual attribute words; never facts."""
    k = KINDS[g["kind"]]
    one = g["count"] == 1
    adjectives = " and ".join(w for w in (k.shape, k.texture) if w)
    subject, be, have = ("it", "is", "has") if one else ("they", "are", "have")
    if adjectives:
        return f"{subject} {be} {adjectives} and {have} {k.parts}."
    return f"{subject} {have} {k.parts}."


def caption(scene: Scene, rng: random.Random) -> str:
    """One of several templates. Every template names kind, colour, count and position; most name size."""
    gs = scene.groups()
    be = "is" if gs[0]["count"] == 1 else "are"
    if len(gs) > 1:
        both = " and ".join(_group_phrase(g) for g in gs)
        return rng.choice([f"{both}.", f"there {be} {both}.", f"a picture of {both}."])
    g = gs[0]
    template = rng.randrange(6)
    if template == 0:
        return f"{_group_phrase(g)}."
    if template == 1:
        return f"there {be} {_group_phrase(g)}."
    if template == 2:
        return f"{POSITION_PHRASES[g['position']]}, there {be} {_group_phrase(g, with_position=False)}."
    if template == 3:
        return f"a picture of {_group_phrase(g)}."
    if template == 4:
        return f"{_group_phrase(g, with_size=False)}."
    return f"{_group_phrase(g)}. {_looks_sentence(g)}"


def _paraphrase_phrase(kind: str, colour: str, size: str | None, count: int, rng: random.Random) -> str:
    """The thing described by its look instead of its name: 'a small round red fruit with a stem'."""
    k = KINDS[kind]
    sort = k.sort if count == 1 else k.sort + ("es" if k.sort.endswith("sh") else "s")
    adjectives = [w for w in (k.texture, k.shape) if w]
    lead = (lambda words: with_article(words)) if count == 1 else (lambda words: f"{NUMBER_WORDS[count]} {words}")
    if rng.random() < 0.5:
        return lead(" ".join(w for w in (size, *adjectives, colour, sort) if w)) + f" with {k.parts}"
    that = "that is" if count == 1 else "that are"
    has = "has" if count == 1 else "have"
    looks = f" {that} {' and '.join(adjectives)} and {has} {k.parts}" if adjectives else f" with {k.parts}"
    return lead(" ".join(w for w in (size, colour, sort) if w)) + looks


def describe(thing: Scene | Obj, rng: random.Random | None = None, style: str = "plain") -> str:
    """A text stand-in for an image. plain reads like a caption ('a small red apple.' for an object,
    'two blue cars at the top.' for a scene); paraphrase names no kind, only its look."""
    rng = rng or random.Random(0)
    if style not in ("plain", "paraphrase"):
        raise ValueError(f"describe: unknown style {style!r} (plain or paraphrase)")
    if isinstance(thing, Obj):
        if style == "plain":
            return noun_phrase(thing.kind, thing.colour, thing.size) + "."
        return _paraphrase_phrase(thing.kind, thing.colour, thing.size, 1, rng) + "."
    if style == "plain":
        return " and ".join(_group_phrase(g) for g in thing.groups()) + "."
    parts = [_paraphrase_phrase(g["kind"], g["colour"], g["size"], g["count"], rng) + " "
             + POSITION_PHRASES[g["position"]] for g in thing.groups()]
    return " and ".join(parts) + "."


_NOUNS = {**{k.plural: k.name for k in KINDS.values()}, **{k.name: k.name for k in KINDS.values()}}
_COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}


def parse_caption(text: str) -> dict:
    """Read back what a caption names. Only the first sentence is read (the second, when there is
    one, is about looks). Returns kinds, and colour/count/position/size of the first group (None
    where not named), and every group under "groups"."""
    first = text.strip().lower().split(". ")[0].rstrip(".")
    groups = []
    for clause in first.split(" and "):
        words = re.findall(r"[a-z]+", clause)
        kind = next((_NOUNS[w] for w in words if w in _NOUNS), None)
        if kind is None:
            continue
        counts = [_COUNTS[w] for w in words if w in ("two", "three")]
        position = next((p for p, phrase in POSITION_PHRASES.items() if phrase in clause), None)
        groups.append(dict(kind=kind,
                           colour=next((w for w in words if w in COLOURS), None),
                           size=next((w for w in words if w in SIZES), None),
                           position=position,
                           count=counts[0] if counts else 1))
    head = groups[0] if groups else dict(colour=None, size=None, position=None, count=None)
    return dict(kinds=[g["kind"] for g in groups], colour=head["colour"], count=head["count"],
                position=head["position"], size=head["size"], groups=groups)


# ----------------------------------------------------------------------------------------------
# The image dataset


class World(torch.utils.data.Dataset):
    """Map-style dataset of (PIL image, caption, Scene). Item i is drawn from its own RNG seeded by
    (seed, split, i), so items are reproducible and DataLoader workers need no coordination.
    Splits train/val/test hold the seen kinds (different scenes per split); "heldout" holds only
    the held-out kinds. kinds= overrides the split's kinds."""

    def __init__(self, seed=0, image_size=64, split="train", length=100_000, kinds=None):
        if split not in SPLITS:
            raise ValueError(f"World: unknown split {split!r}; choose one of {sorted(SPLITS)}")
        unknown = [k for k in (kinds or ()) if k not in KINDS]
        if unknown:
            raise ValueError(f"World: unknown kinds {unknown}")
        self.seed, self.image_size, self.split, self.length = seed, image_size, split, length
        self.kinds = tuple(kinds) if kinds else SPLITS[split]

    def __len__(self):
        return self.length

    def _rng(self, i) -> random.Random:
        return random.Random(f"world/{self.seed}/{self.split}/{i}")

    def scene_and_caption(self, i) -> tuple[Scene, str, random.Random]:
        """Everything but the pixels (cheap: used by tests and by text-side code)."""
        rng = self._rng(i)
        scene = sample_scene(rng, self.kinds)
        return scene, caption(scene, rng), rng

    def __getitem__(self, i):
        if not 0 <= i < self.length:
            raise IndexError(f"World index {i} out of range (length {self.length})")
        scene, text, rng = self.scene_and_caption(i)
        return render(scene, self.image_size, rng), text, scene


# ----------------------------------------------------------------------------------------------
# Text: facts and questions (facts appear only here, never in captions)


def _singular(verb: str) -> str:
    """'grow' -> 'grows', 'are found' -> 'is found'."""
    return "is" + verb[3:] if verb.startswith("are") else verb + "s"


def fact_sentences(kind: str) -> list[str]:
    """Every form a fact about this kind takes in the corpus (tests check none is in a caption)."""
    k, f = KINDS[kind], KINDS[kind].facts
    a_name = with_article(k.name)
    out = [f"{a_name} is {f['is_']}.", f"every {k.name} is {f['is_']}."]
    if f["use"]:
        out += [f"{k.plural} are used for {f['use']}.", f"people use {k.plural} for {f['use']}."]
    verb, place = f["found"]
    out += [f"{k.plural} {verb} {place}.", f"you can find {k.plural} {place}."]
    out += [f"you can eat {k.plural}." if f["eat"] else f"you can not eat {k.plural}.",
            f"{k.plural} are good to eat." if f["eat"] else f"{k.plural} are not food."]
    for ability in ("fly", "swim"):
        out.append(f"{a_name} can {ability}." if f[ability] else f"{a_name} can not {ability}.")
    return out + list(f["extra"])


def _it_sentences(kind: str) -> list[str]:
    """Facts about a thing already in context, referred to as 'it'."""
    k, f = KINDS[kind], KINDS[kind].facts
    verb, place = f["found"]
    out = [f"it is {f['is_']}.", f"it {_singular(verb)} {place}.",
           "you can eat it." if f["eat"] else "you can not eat it.",
           "it can fly." if f["fly"] else "it can not fly.",
           "it can swim." if f["swim"] else "it can not swim."]
    if f["use"]:
        out.append(f"it is used for {f['use']}.")
    return out


def knowledge_question(kind: str, rng: random.Random, about="this") -> tuple[str, str]:
    """A question whose answer is only in the text ('Can you eat this?' -> 'yes'). about='this'
    refers to a thing in context (OKVQA's layout); about='name' names the kind."""
    k, f = KINDS[kind], KINDS[kind].facts
    yes = {True: "yes", False: "no"}
    this = about == "this"
    options = [
        (f"Can you eat {'this' if this else k.plural}?", yes[f["eat"]]),
        (f"Can {'this' if this else with_article(k.name)} fly?", yes[f["fly"]]),
        (f"Can {'this' if this else with_article(k.name)} swim?", yes[f["swim"]]),
        (f"Where can you find {'this' if this else k.plural}?", f["found"][1]),
    ]
    if f["use"]:
        options.append((f"What is {'this' if this else with_article(k.name)} used for?", f["use"]))
    if not this:
        options.append((f"What is {with_article(k.name)}?", f["is_"]))
    return rng.choice(options)


VISUAL_QUESTIONS = ("colour", "count", "kind", "position")


def visual_question(scene: Scene, rng: random.Random, qtype="any") -> tuple[str, str, str]:
    """A question about what is visible, its answer, and its type (VQAv2's role)."""
    gs = scene.groups()
    qtype = rng.choice(VISUAL_QUESTIONS) if qtype == "any" else qtype
    if qtype == "kind" and len(gs) > 1:
        qtype = "colour"
    g = rng.choice(gs)
    k = KINDS[g["kind"]]
    one = g["count"] == 1
    the = f"the {k.name}" if one else f"the {k.plural}"
    if qtype == "colour":
        return f"What colour {'is' if one else 'are'} {the}?", g["colour"], qtype
    if qtype == "count":
        return f"How many {k.plural} are there?", NUMBER_WORDS[g["count"]], qtype
    if qtype == "position":
        return f"Where {'is' if one else 'are'} {the}?", POSITION_PHRASES[g["position"]], qtype
    if qtype == "kind":
        return "What kind of thing is in the picture?", k.name, qtype
    raise ValueError(f"visual_question: unknown type {qtype!r}; choose from {VISUAL_QUESTIONS} or 'any'")


def qa(question: str, answer: str | None = None) -> str:
    return f"Question: {question} Answer:" + (f" {answer}." if answer is not None else "")


# ----------------------------------------------------------------------------------------------
# Made-up names for the corpus: a syllable grammar, with the evaluation's names rejected.
# The grammar is wide on purpose (qu, y, ck, zz, ou, vowel-initial second syllables): an evaluation
# name is cut by the BPE into pieces, and a piece that only ever occurs inside held-out names has an
# untrained embedding that the LM cannot copy. Measured on the demo LM before the grammar was
# widened: unseen names of the grammar were bound 0.87 / 0.92 (2 / 5-way), NONSENSE_NAMES 0.46 / 0.53,
# every failure a name with a piece the corpus never used (' y', 'qu', 'cket').

_ONSETS = ("b c d f g h j k l m n p r s t v w y z "
           "bl br ch cl cr dr fl fr gl gr kl pl qu sh sk sl sn sp st sw th tr").split()
_VOWELS = "a e i o u a e i o u ou oo ee ai".split()  # plain vowels twice as likely
_CODAS = "b d g k l m n p r s t x ck ll ss zz ng rp rg lk mp nt rk".split()
_PEOPLE = ("tom", "anna", "ben", "mia", "sam", "lily", "max", "emma", "leo", "zoe")
_PLACES = ("on the table", "under the bed", "in the box", "next to the door", "in the garden", "on the shelf",
           "under the table", "behind the chair", "in the bag", "by the window")
# English words a made-up name must not be: the corpus's own words (added below from the kinds and
# facts) and short common words that a consonant-vowel-consonant grammar would otherwise produce.
_COMMON = set("""a an the is are was were be it its this that there these those they he she we you i and or
but so of to in on at by for with from up down out as if not no yes can will do did does has have had
one two three four five six many some all any more most very too also just then than now here where what
who how why which when big small left right top bottom middle picture thing things kind question answer
called call name named children looked later saw found put had said took gave ate flew swam away again
next day one pet man men fun sun see say run day get got let lot set sit top hot new old red tan bed box
bag map cap car bus cat dog hen pig fox cow ant bee owl egg leg arm ear eye lip toe tip dot pot pen pin
cup mug jar jug tin tub rug mat net web bat ball toy tree door wall room home road sea sky air fire rock
land lake pond hill farm park shop boat ship bike kite nest tail wing beak horn fin fur hat bun nut pea
yam gum jam ham bun bud mud rod cod kid dad mum son bob tim ned ted kim meg pat jen zip zap pop top bin
bud bug hug mug rub sub tub gut hut nut cut but put pit pot lot rot dot not hot got bot cod god nod pod
rod sod tod lid kid bid did hid mid rid sit kit bit fit hit lit pit wit tin bin din fin kin pin sin win
gap lap map nap rap sap tap yap cab dab jab lab nab tab fan man pan ran tan van bet get jet let met net
pet set wet den hen men pen ten beg keg leg peg ram dam ham jam yam dim him rim vim gum hum rum sum bum
pub rub tub nub rib fib jib sob rob mob job gob bog dog fog hog jog log cog tug rug mug lug jug dug bud
stop spot step stem star stun snap snip slip slap slot plan plot plus trip trap trim grab grin grip glad
blob blot blur drum drip drop flag flap flat flip frog from spin span skin skip swim swam""".split())


@functools.cache
def _reserved_words() -> frozenset[str]:
    words = set(_COMMON) | set(COLOURS) | set(BACKGROUNDS) | set(_PEOPLE) | set(NONSENSE_NAMES)
    for k in KINDS.values():
        text = " ".join([k.name, k.plural, k.sort, k.shape, k.parts, k.texture, *fact_sentences(k.name)])
        words |= set(re.findall(r"[a-z]+", text))
    for phrase in (*_PLACES, *POSITION_PHRASES.values()):
        words |= set(phrase.split())
    return frozenset(words)


def made_up_name(rng: random.Random) -> str:
    """1-2 syllables of consonants + vowel (+ consonants): 'tove', 'quimsel', 'blouck'. Never an English
    word of the corpus, never one of NONSENSE_NAMES."""
    reserved = _reserved_words()
    while True:
        n = rng.choice((1, 2, 2))
        syllables = []
        for i in range(n):
            onset = "" if i > 0 and rng.random() < 0.2 else rng.choice(_ONSETS)
            s = onset + rng.choice(_VOWELS)
            if rng.random() < (0.6 if i == n - 1 else 0.25):
                s += rng.choice(_CODAS)
            syllables.append(s)
        name = "".join(syllables)
        if len(name) >= 3 and name not in reserved:
            return name


def made_up_names(rng: random.Random, n: int) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = made_up_name(rng)
        if name not in names:
            names.append(name)
    return names


# ----------------------------------------------------------------------------------------------
# Pieces: one builder serves both the episodes (images or text descriptions) and the corpus (text,
# with training names), so the corpus's binding passages are exactly the evaluation's layout.


class _Pieces:
    """Turns scenes into pieces: a rendered image, or (as_text) its text description. Has its own
    RNGs so that an episode's structure and answers do not depend on as_text."""

    def __init__(self, key: str, image_size: int, as_text: bool):
        self.image_size, self.as_text = image_size, as_text
        self.render_rng = random.Random(f"render/{key}")
        self.text_rng = random.Random(f"text/{key}")

    def scene(self, scene: Scene, style="plain"):
        if self.as_text:
            return describe(scene, self.text_rng, style)
        return render(scene, self.image_size, self.render_rng)

    def thing(self, scene: Scene, style="plain", bare=False):
        """A lone object: described as 'a small red apple.' (no position) in text; `bare` drops the
        full stop, for the direct layout where the name follows the thing as an image's would."""
        if self.as_text:
            text = describe(scene.objects[0], self.text_rng, style)
            return text.removesuffix(".") if bare else text
        return render(scene, self.image_size, self.render_rng)


def _naming(name: str, layout: str) -> str:
    if layout == "paper":
        return f"This is {with_article(name)}."
    if layout == "direct":
        return f"{name}."
    raise ValueError(f"unknown binding layout {layout!r} (paper or direct)")


def _induction(names: list[str]) -> str:
    """'Answer with dax or blicket.' (the paper's task induction)."""
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"Answer with {listed}."


def _query_scene(rng: random.Random, kind: str, support: list[Scene], query: str) -> Scene:
    if query == "same":
        return rng.choice(support)
    if query == "different":  # other colour or size than every support example of this kind
        used = {(s.objects[0].colour, s.objects[0].size) for s in support}
        free = [(c, z) for c in KINDS[kind].colours for z in SIZES if (c, z) not in used]
        if free:
            colour, size = rng.choice(free)
            return lone_scene(rng, kind, colour, size)
        return lone_scene(rng, kind)
    if query == "paraphrase":
        return lone_scene(rng, kind)
    raise ValueError(f"unknown binding query {query!r} (different, same or paraphrase)")


def _support(rng, out: _Pieces, chosen, names, inner_shots, repeats, layout, task_induction):
    """The support set: each chosen kind (one way each, named by the parallel `names`) shown
    `inner_shots` times (distinct examples), the whole set repeated `repeats` times, shuffled within
    each repeat; each example followed by its name."""
    if len(names) != len(chosen):
        raise ValueError(f"binding: {len(chosen)} kinds but {len(names)} names")
    name_of = dict(zip(chosen, names))
    examples = {k: [lone_scene(rng, k) for _ in range(inner_shots)] for k in chosen}
    pieces = [_induction(rng.sample(names, len(names)))] if task_induction else []
    order = [(k, s) for s in range(inner_shots) for k in chosen]
    for _ in range(repeats):
        rng.shuffle(order)
        for k, s in order:
            pieces += [out.thing(examples[k][s], bare=layout == "direct"), _naming(name_of[k], layout)]
    return name_of, examples, pieces


def _binding(rng, out: _Pieces, chosen, names, inner_shots=1, repeats=1, task_induction=False,
             layout="paper", query="different", n_queries=1):
    """Open-ended miniImageNet, re-made: `chosen` kinds are the ways, `names` their names.
    Returns (support pieces, [(query pieces, answer)], info)."""
    name_of, examples, pieces = _support(rng, out, chosen, names, inner_shots, repeats, layout, task_induction)
    style = "paraphrase" if query == "paraphrase" else "plain"
    queries, query_kinds = [], []
    for _ in range(n_queries):
        k = rng.choice(chosen)
        thing = out.thing(_query_scene(rng, k, examples[k], query), style, bare=layout == "direct")
        name = name_of[k]
        if layout == "paper":
            queries.append((["Question: What is this? Answer:", thing, f"This is {article(name)}"], name))
        else:
            queries.append(([thing], name))
        query_kinds.append(k)
    info = dict(kinds=chosen, names=name_of, query_kinds=query_kinds, ways=len(chosen), inner_shots=inner_shots,
                repeats=repeats, layout=layout, query=query, task_induction=task_induction)
    return pieces, queries, info


def _fast_vqa(rng, out: _Pieces, chosen, names, inner_shots=1, repeats=1, task_induction=False,
              layout="paper", question="any", n_queries=1):
    """Fast-VQA, re-made: bind names to kinds, then ask about a scene using a name. The scene holds
    the named kind and another support kind, in other colours and places, so the name matters."""
    name_of, _, pieces = _support(rng, out, chosen, names, inner_shots, repeats, layout, task_induction)
    queries, query_kinds = [], []
    for _ in range(n_queries):
        target, other = rng.sample(chosen, 2)
        colours = rng.sample(KINDS[target].colours, 1)
        others = [c for c in KINDS[other].colours if c not in colours] or list(KINDS[other].colours)
        colours.append(rng.choice(others))
        objects = []
        for kind, colour, position in zip((target, other), colours, rng.choice(PAIRED_POSITIONS)):
            objects += _group_objects(rng, kind, colour, rng.choice(SIZES), position, 1)
        scene = Scene(objects, _pick_background(rng, objects), rng.choice((0.0, 0.0, rng.uniform(2, 10))))
        qtype = rng.choice(("colour", "position")) if question == "any" else question
        name = name_of[target]
        if qtype == "colour":
            q, a = f"What colour is the {name}?", colours[0]
        elif qtype == "position":
            q, a = f"Where is the {name}?", POSITION_PHRASES[objects[0].position]
        else:
            raise ValueError(f"fast_vqa: unknown question {question!r} (colour, position or any)")
        queries.append(([out.scene(scene), qa(q)], a))
        query_kinds.append(target)
    info = dict(kinds=chosen, names=name_of, query_kinds=query_kinds, ways=len(chosen), inner_shots=inner_shots,
                repeats=repeats, layout=layout, task_induction=task_induction)
    return pieces, queries, info


def _join(pieces) -> str:
    return " ".join(pieces)


def _passage(pieces, queries) -> str:
    """Text of a support set followed by every query with its answer filled in."""
    text = list(pieces)
    for qp, answer in queries:
        text += [*qp, answer + "."]
    return _join(text)


# ----------------------------------------------------------------------------------------------
# The text corpus. One function per passage type; TextMix weighs them.


@dataclass
class TextMix:
    """Share of each passage type in the stage-lm corpus (weights; normalised when drawn).

    About a third is the world's knowledge and language (facts, Q/A, stories, scene descriptions,
    naming stories): without it the LM has no facts for OKVQA and no Q/A format. About 40% of the
    documents are binding passages in exactly the evaluation's layouts, the direct one weighted
    higher (DESIGN.md: a tiny GPT bound names in the direct layout within minutes but chose by
    position in the paper layout). 15% is plain copy passages: measured, a tiny GPT without them
    never learned to copy, and induction heads are what binding rides on. 10% is solved-example
    lists, so that following a format from examples (the 1- and 4-shot VQA prompts) is learnt
    from text. Weights count documents; `python world.py --mix 5000` prints the shares of
    documents and characters (binding passages are long: about half of the characters)."""

    knowledge: float = 0.12
    qa: float = 0.12
    story: float = 0.06
    scene: float = 0.05
    naming: float = 0.05
    binding: float = 0.15  # paper layout: "a red apple. This is a dax."
    copy: float = 0.15
    examples: float = 0.10
    binding_direct: float = 0.25  # direct layout: "a red apple dax."


def _text_pieces(rng) -> _Pieces:
    return _Pieces(f"corpus/{rng.getrandbits(64)}", 0, as_text=True)


def passage_knowledge(rng: random.Random) -> str:
    sentences = []
    for kind in rng.sample(list(KINDS), rng.randint(1, 3)):
        facts = fact_sentences(kind)
        sentences += rng.sample(facts, rng.randint(3, min(6, len(facts))))
    return " ".join(sentences)


def passage_qa(rng: random.Random) -> str:
    """Several questions in a row: about named kinds, about 'this' after a description, about what a
    description shows (the OKVQA and VQA layouts, with text where the image will be)."""
    out = _text_pieces(rng)
    items = []
    for _ in range(rng.randint(2, 5)):
        r = rng.random()
        if r < 0.35:
            items.append(qa(*knowledge_question(rng.choice(list(KINDS)), rng, about="name")))
        elif r < 0.7:
            kind = rng.choice(list(KINDS))
            qs = [qa(*knowledge_question(kind, rng)) for _ in range(rng.randint(1, 2))]
            items.append(_join([out.thing(lone_scene(rng, kind))] + list(dict.fromkeys(qs))))
        else:
            scene = sample_scene(rng, KINDS)
            qs = [qa(*visual_question(scene, rng)[:2]) for _ in range(rng.randint(1, 2))]
            items.append(_join([out.scene(scene)] + list(dict.fromkeys(qs))))
    return " ".join(items)


def passage_story(rng: random.Random) -> str:
    kind = rng.choice(list(KINDS))
    k = KINDS[kind]
    thing = noun_phrase(kind, rng.choice(k.colours), rng.choice(SIZES))
    facts = rng.sample(_it_sentences(kind), 2)
    if rng.random() < 0.4:  # a thing named and then referred to as "this" and "it"
        return f"this is {thing}. " + " ".join(facts) + " " + _looks_sentence(dict(kind=kind, count=1))
    person = rng.choice(_PEOPLE)
    start = rng.choice([f"{person} saw {thing} {rng.choice(_PLACES)}.", f"one day {person} found {thing}.",
                        f"{person} had {thing}."])
    if k.facts["eat"]:
        end = f"{person} was hungry, so {person} ate the {kind}."
    elif k.facts["fly"]:
        end = f"then the {kind} flew away, and {person} waved."
    elif k.facts["swim"]:
        end = f"then the {kind} swam away."
    else:
        end = f"{person} put the {kind} {rng.choice(_PLACES)}."
    return " ".join([start, *facts, end])


def passage_scene(rng: random.Random) -> str:
    """Descriptions of scenes in words, as captions and as paraphrases."""
    lines = []
    for _ in range(rng.randint(3, 6)):
        scene = sample_scene(rng, KINDS)
        lines.append(caption(scene, rng) if rng.random() < 0.7 else describe(scene, rng, "paraphrase"))
    return " ".join(lines)


def passage_naming(rng: random.Random) -> str:
    """A made-up name given to a thing and used again later ('the children called it a tove')."""
    person = rng.choice(_PEOPLE)
    if rng.random() < 0.5:
        kind = rng.choice(list(KINDS))
        name = made_up_name(rng)
        colour = rng.choice(KINDS[kind].colours)
        place, later = rng.sample(_PLACES, 2)
        return (f"{person} had {noun_phrase(kind, colour, rng.choice(SIZES))}. {person} called it {article(name)} "
                f"'{name}'. the {name} was {place}. later {person} put the {name} {later}. "
                f"where is the {name}? the {name} is {later}. " + qa(f"What colour is the {name}?", colour))
    k1, k2 = rng.sample(list(KINDS), 2)
    n1, n2 = made_up_names(rng, 2)
    c1, c2 = rng.choice(KINDS[k1].colours), rng.choice(KINDS[k2].colours)
    p1, p2 = rng.sample(_PLACES, 2)
    questions = [qa(f"Where is the {n1}?", p1), qa(f"What colour is the {n2}?", c2),
                 qa(f"What colour is the {n1}?", c1), qa(f"Where is the {n2}?", p2)]
    return (f"there was {noun_phrase(k1, c1, None)} and {noun_phrase(k2, c2, None)}. the children called the {k1} "
            f"{article(n1)} '{n1}' and the {k2} {article(n2)} '{n2}'. the {n1} was {p1} and the {n2} was {p2}. "
            + " ".join(rng.sample(questions, rng.randint(2, 4))))


def passage_binding(rng: random.Random, layout: str = "paper") -> str:
    """The evaluation's binding (and Fast-VQA) task, as text with training names, several queries."""
    out = _text_pieces(rng)
    ways = rng.choice((2, 2, 3, 5))
    inner_shots = rng.choice((1, 1, 2, 3)) if ways < 5 else rng.choice((1, 1, 2))
    repeats = rng.choice((1, 1, 2)) if ways * inner_shots <= 6 else 1
    kinds = list(KINDS)
    real = rng.random() < 0.15  # real names too: the Real-Name miniImageNet layout
    names = None if real else made_up_names(rng, ways)
    options = dict(inner_shots=inner_shots, repeats=repeats, task_induction=rng.random() < 0.5,
                   layout=layout, n_queries=rng.randint(1, 4))
    chosen = rng.sample(kinds, ways)
    if rng.random() < 0.2:
        pieces, queries, _ = _fast_vqa(rng, out, chosen, names or chosen, **options)
    else:
        query = rng.choices(("different", "same", "paraphrase"), weights=(0.5, 0.2, 0.3))[0]
        pieces, queries, _ = _binding(rng, out, chosen, names or chosen, query=query, **options)
    return _passage(pieces, queries)


def _copy_vocabulary() -> tuple[str, ...]:
    words = set(KINDS) | {k.plural for k in KINDS.values()} | set(COLOURS) | set(_PEOPLE) | set(SIZES)
    words |= {w for w in _COMMON if len(w) > 2}
    return tuple(sorted(words - set(NONSENSE_NAMES)))


COPY_WORDS = _copy_vocabulary()


def _copy_sequence(rng: random.Random, n: int) -> list[str]:
    return [made_up_name(rng) if rng.random() < 0.25 else rng.choice(COPY_WORDS) for _ in range(n)]


def passage_copy(rng: random.Random) -> str:
    """A random word sequence, then the same again: the plainest thing induction heads can learn."""
    seq = _copy_sequence(rng, rng.randint(4, 24))
    return " ".join(" ".join(seq) for _ in range(rng.choice((2, 2, 3))))


def passage_examples(rng: random.Random) -> str:
    """Solved examples in a row, in one format, the last one solved too (the LM learns the format)."""
    out = _text_pieces(rng)
    n = rng.randint(3, 6)
    form = rng.randrange(4)
    if form == 0:  # VQA shots with descriptions where images will be
        qtype = rng.choice(VISUAL_QUESTIONS)
        items = []
        for _ in range(n):
            scene = sample_scene(rng, KINDS)
            items.append(_join([out.scene(scene), qa(*visual_question(scene, rng, qtype)[:2])]))
        return " ".join(items)
    if form == 1:  # OKVQA shots
        return " ".join(_join([out.thing(lone_scene(rng, kind)), qa(*knowledge_question(kind, rng))])
                        for kind in rng.choices(list(KINDS), k=n))
    if form == 2:  # word lists: kind -> sort, kind -> plural
        relation = rng.choice([lambda k: k.sort, lambda k: k.plural, lambda k: k.category])
        return "\n".join(f"{k.name}: {relation(k)}." for k in (KINDS[x] for x in rng.sample(list(KINDS), n)))
    # plain description -> paraphrase: ties the kind names to their look words
    lines = []
    for kind in rng.sample(list(KINDS), n):
        scene = lone_scene(rng, kind)
        lines.append(f"{describe(scene.objects[0], rng)[:-1]} means {describe(scene.objects[0], rng, 'paraphrase')}")
    return "\n".join(lines)


PASSAGES: dict[str, Callable[[random.Random], str]] = {
    "knowledge": passage_knowledge, "qa": passage_qa, "story": passage_story, "scene": passage_scene,
    "naming": passage_naming, "binding": passage_binding, "copy": passage_copy, "examples": passage_examples,
    "binding_direct": functools.partial(passage_binding, layout="direct"),
}


def text_document(seed: int, i: int, mix: TextMix = TextMix()) -> tuple[str, str]:
    """Document i of the corpus with this seed, and its passage type."""
    rng = random.Random(f"corpus/{seed}/{i}")
    names = [f.name for f in fields(mix)]
    kind = rng.choices(names, weights=[getattr(mix, n) for n in names])[0]
    return kind, PASSAGES[kind](rng)


def text_documents(seed: int = 0, mix: TextMix = TextMix()) -> Iterator[str]:
    """The stage-lm corpus: infinite, deterministic, one passage per item."""
    for i in itertools.count():
        yield text_document(seed, i, mix)[1]


def corpus_text(seed: int, n_chars: int, mix: TextMix = TextMix()) -> str:
    """The first n_chars of the corpus, documents joined with blank lines."""
    parts, total = [], 0
    for doc in text_documents(seed, mix):
        parts.append(doc)
        total += len(doc) + 2
        if total >= n_chars:
            break
    return "\n\n".join(parts)[:n_chars]


# ----------------------------------------------------------------------------------------------
# Episodes for few-shot evaluation


@dataclass
class Episode:
    pieces: list  # PIL images and str, in order; the consumer joins text pieces with one space
    answer: str
    task: str
    info: dict = field(default_factory=dict)


def _episode_caption(rng, out: _Pieces, shots=0, split="test"):
    """Captioning (Conceptual Captions' role): caption a scene, after `shots` captioned examples."""
    pieces = []
    for _ in range(shots):
        scene = sample_scene(rng, SPLITS[split])
        pieces += [out.scene(scene), caption(scene, rng)]
    scene = sample_scene(rng, SPLITS[split])
    pieces.append(out.scene(scene))
    return pieces, describe(scene), dict(scene=scene, shots=shots)


def _episode_vqa(rng, out: _Pieces, shots=0, question="any", split="test"):
    """VQAv2's role: a question about what is visible, after `shots` solved examples."""
    pieces = []
    for _ in range(shots):
        scene = sample_scene(rng, SPLITS[split])
        pieces += [out.scene(scene), qa(*visual_question(scene, rng, question)[:2])]
    scene = sample_scene(rng, SPLITS[split])
    q, a, qtype = visual_question(scene, rng, question)
    pieces += [out.scene(scene), qa(q)]
    return pieces, a, dict(scene=scene, shots=shots, question=qtype)


def _episode_okvqa(rng, out: _Pieces, shots=0, split="test"):
    """OKVQA's role: the answer is a fact that only the text corpus states."""
    pieces = []
    for _ in range(shots):
        kind = rng.choice(SPLITS[split])
        pieces += [out.thing(lone_scene(rng, kind)), qa(*knowledge_question(kind, rng))]
    kind = rng.choice(SPLITS[split])
    scene = lone_scene(rng, kind)
    q, a = knowledge_question(kind, rng)
    pieces += [out.thing(scene), qa(q)]
    return pieces, a, dict(scene=scene, kind=kind, shots=shots)


def _names_for(rng, names, ways):
    if names == "nonsense":
        return rng.sample(NONSENSE_NAMES, ways)
    if names == "real":
        return None
    raise ValueError(f"unknown names {names!r} (nonsense or real)")


def _episode_binding(rng, out: _Pieces, ways=2, inner_shots=1, repeats=1, task_induction=False, names="nonsense",
                     layout="paper", query="different", kinds=HELD_OUT_KINDS):
    """Open-ended miniImageNet's role: bind names to held-out kinds from the prompt, name a new one."""
    if not 1 <= ways <= len(kinds):
        raise ValueError(f"binding: ways must be 1..{len(kinds)}, got {ways}")
    chosen = rng.sample(list(kinds), ways)
    name_list = _names_for(rng, names, ways) or chosen
    pieces, queries, info = _binding(rng, out, chosen, name_list, inner_shots, repeats, task_induction,
                                     layout, query, n_queries=1)
    (qp, answer), = queries
    return pieces + qp, answer, dict(info, name_style=names)


def _episode_fast_vqa(rng, out: _Pieces, ways=2, inner_shots=1, repeats=1, task_induction=False, names="nonsense",
                      layout="paper", question="any", kinds=HELD_OUT_KINDS):
    """Fast-VQA's role: bind names, then answer a question that uses one of them."""
    if ways < 2 or ways > len(kinds):
        raise ValueError(f"fast_vqa: ways must be 2..{len(kinds)}, got {ways}")
    chosen = rng.sample(list(kinds), ways)
    name_list = _names_for(rng, names, ways) or chosen
    pieces, queries, info = _fast_vqa(rng, out, chosen, name_list, inner_shots, repeats, task_induction,
                                      layout, question, n_queries=1)
    (qp, answer), = queries
    return pieces + qp, answer, dict(info, name_style=names)


def _episode_copy(rng, out: _Pieces, length=8):
    """Plain copy: a word sequence, then its first half again; the answer is the rest of it."""
    seq = _copy_sequence(rng, length)
    half = length // 2
    return [" ".join(seq + seq[:half])], " ".join(seq[half:]), dict(length=length, sequence=seq)


_EPISODES = {"caption": _episode_caption, "vqa": _episode_vqa, "okvqa": _episode_okvqa,
             "binding": _episode_binding, "fast_vqa": _episode_fast_vqa, "copy": _episode_copy}
TASKS = tuple(_EPISODES)


def episodes(task: str, n: int, seed: int = 0, image_size: int = 64, as_text: bool = False,
             **options) -> list[Episode]:
    """n deterministic episodes of a task. Options by task:
    caption: shots, split | vqa: shots, question (colour/count/kind/position/any), split |
    okvqa: shots, split | binding: ways, inner_shots, repeats, task_induction, names (nonsense/real),
    layout (paper/direct), query (different/same/paraphrase), kinds | fast_vqa: ways, inner_shots,
    repeats, task_induction, names, layout, question (colour/position/any), kinds | copy: length."""
    if task not in _EPISODES:
        raise ValueError(f"episodes: unknown task {task!r}; choose one of {TASKS}")
    key = "/".join(f"{k}={options[k]}" for k in sorted(options))
    result = []
    for i in range(n):
        rng = random.Random(f"episode/{task}/{seed}/{key}/{i}")
        out = _Pieces(f"{task}/{seed}/{key}/{i}", image_size, as_text)
        pieces, answer, info = _EPISODES[task](rng, out, **options)
        result.append(Episode(pieces, answer, task, info))
    return result


def episode_text(episode: Episode) -> str:
    """An as_text episode as one string (the consumer's join rule)."""
    return _join(p for p in episode.pieces)


# ----------------------------------------------------------------------------------------------
# CLI: a sample sheet, a corpus sample, a speed check


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


def sample_sheet(path: str, image_size=64, n=24, split="train", seed=0, cols=6):
    world = World(seed, image_size, split)
    return draw_sheet([world[i][:2] for i in range(n)], path, cols)


def bench(seconds=2.0):
    for size in (32, 64, 128):
        world, i, t0 = World(0, size), 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            world[i]
            i += 1
        print(f"images {size:>3}px: {i / (time.perf_counter() - t0):8.0f} /s")
    t0, chars = time.perf_counter(), 0
    for doc in text_documents(0):
        chars += len(doc) + 2
        if time.perf_counter() - t0 > seconds:
            break
    print(f"corpus: {chars / (time.perf_counter() - t0) / 1e6:8.2f} M chars/s")


def main(argv=None):
    parser = argparse.ArgumentParser(description="The drawn world: sample sheets, corpus samples, speed.")
    parser.add_argument("--sheet", help="write a grid PNG of images with their captions to this path")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels (32, 64 or 128)")
    parser.add_argument("--n", type=int, default=24, help="number of images on the sheet")
    parser.add_argument("--split", default="train", choices=sorted(SPLITS), help="which split to draw")
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    parser.add_argument("--text", type=int, default=0, help="print this many characters of the corpus")
    parser.add_argument("--bench", action="store_true", help="print images/s and corpus chars/s")
    parser.add_argument("--mix", type=int, default=0, help="print each passage type's share of this many documents")
    args = parser.parse_args(argv)
    if not (args.sheet or args.text or args.bench or args.mix):
        parser.print_help()
        return
    if args.sheet:
        import os
        os.makedirs(os.path.dirname(os.path.abspath(args.sheet)), exist_ok=True)
        print(f"wrote {sample_sheet(args.sheet, args.size, args.n, args.split, args.seed)}")
    if args.text:
        sys.stdout.write(corpus_text(args.seed, args.text) + "\n")
    if args.bench:
        bench()
    if args.mix:
        print_mix(args.seed, args.mix)


def print_mix(seed, n):
    """The share of documents and of characters of each passage type in the corpus's first n."""
    docs, chars = {}, {}
    for i in range(n):
        kind, text = text_document(seed, i)
        docs[kind] = docs.get(kind, 0) + 1
        chars[kind] = chars.get(kind, 0) + len(text)
    total = sum(chars.values())
    print("| passage | documents | characters |\n|---|---|---|")
    for kind in sorted(chars, key=chars.get, reverse=True):
        print(f"| {kind} | {docs[kind] / n:.0%} | {chars[kind] / total:.0%} |")


if __name__ == "__main__":
    main()
