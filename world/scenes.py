"""
Chapter 2, scenes: the kinds of thing, scenes of them, their images and their captions.

Frozen trains its vision encoder on Conceptual Captions (3M image-caption pairs) and tests
generalisation to new concepts on miniImageNet's unseen classes. Here:

- Kinds: 29 kinds of thing (fruits, animals, vehicles, tools, sky things, buildings, plain shapes),
  each with typical colours, a shape word, part words and facts. Five kinds are HELD OUT: they
  never appear in stage-prefix training images (miniImageNet's unseen classes, re-made).
- Scenes: 1-2 groups of 1-3 objects with colour, size, position, rotation, background and noise
  varied, rendered with the drawing functions of drawing.py.
- Captions (Conceptual Captions' role): several plain-English templates; `describe` gives the
  text that stands where an image would be, and `parse_caption` reads captions back.
- `World`: the map-style Dataset of (image, caption, scene) that stage prefix trains on.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .drawing import (ANY_COLOUR, BACKGROUNDS, CLEAR, COLOURS, MIN_CONTRAST, Pen, draw_apple, draw_balloon,
                      draw_banana, draw_bird, draw_boat, draw_butterfly, draw_car, draw_carrot, draw_cat,
                      draw_cloud, draw_cup, draw_fish, draw_frog, draw_hammer, draw_house, draw_key, draw_kite,
                      draw_ladybird, draw_moon, draw_mushroom, draw_plane, draw_rocket, draw_snail, draw_snake,
                      draw_square, draw_star, draw_sun, draw_tower, draw_triangle)

# ----------------------------------------------------------------------------------------------
# Kinds: what each thing looks like (for captions and paraphrases) and what is true of it (only
# ever in text). The look words are shared between kinds on purpose: a vision encoder trained on
# seen kinds learns "round", "spotted", "wings", "tail"... so an unseen kind still gets a
# distinctive caption made of attribute words instead of collapsing onto one seen kind's name.


@dataclass(frozen=True, kw_only=True)
class Facts:
    """What is true of a kind. Said only in text (the corpus, OKVQA's answers), never in a caption."""
    is_: str  # what it is: "a fruit"
    found: tuple[str, str]  # (verb, place): ("grow", "on trees") is "apples grow on trees."
    use: str | None = None  # what it is used for: "eating"; None when nothing
    eat: bool = False
    fly: bool = False
    swim: bool = False
    extra: tuple[str, ...] = ()  # more sentences, written as the corpus says them


@dataclass(frozen=True, kw_only=True)
class Kind:
    name: str
    plural: str
    category: str  # fruit, animal, vehicle, tool, sky, building, shape
    sort: str  # the plain noun a paraphrase uses instead of the name ("a round red fruit")
    colours: tuple[str, ...]  # typical colours; ANY_COLOUR for free ones
    shape: str = ""  # shape word ("round", "long", "pointed", ...); none when none fits
    parts: str  # parts phrase ("a stem", "wheels and windows")
    texture: str = ""  # "spotted", "striped", "furry" or none
    facts: Facts
    draw: Callable[[Pen], None] = field(repr=False, compare=False)


_KIND_LIST = [
    Kind(name="apple", plural="apples", category="fruit", sort="fruit", draw=draw_apple,
         colours=("red", "green", "yellow"), shape="round", parts="a stem",
         facts=Facts(is_="a fruit", use="eating", found=("grow", "on trees"), eat=True,
                     extra=("apples can be sweet or sour.", "apple juice is made from apples."))),
    Kind(name="banana", plural="bananas", category="fruit", sort="fruit", draw=draw_banana,
         colours=("yellow", "green"), shape="curved", parts="two brown tips",
         facts=Facts(is_="a fruit", use="eating", found=("grow", "in hot places"), eat=True,
                     extra=("monkeys like bananas.", "you peel a banana before you eat it."))),
    Kind(name="carrot", plural="carrots", category="fruit", sort="vegetable", draw=draw_carrot,
         colours=("orange",), shape="pointed", parts="green leaves",
         facts=Facts(is_="a vegetable", use="eating", found=("grow", "under the ground"), eat=True,
                     extra=("rabbits like carrots.", "carrots are crunchy."))),
    Kind(name="mushroom", plural="mushrooms", category="fruit", sort="plant", draw=draw_mushroom,
         colours=("red", "brown", "white", "orange"), shape="round", parts="a short stem", texture="spotted",
         facts=Facts(is_="a fungus", use="cooking", found=("grow", "in forests"), eat=True,
                     extra=("some mushrooms are poisonous, so pick them with care.",
                            "mushrooms like dark and wet places."))),

    Kind(name="fish", plural="fish", category="animal", sort="animal", draw=draw_fish,
         colours=("orange", "blue", "yellow", "red", "purple", "pink", "green", "grey"),
         shape="long", parts="fins and a tail",
         facts=Facts(is_="an animal that lives in water", found=("live", "in rivers and the sea"),
                     eat=True, swim=True,
                     extra=("fish breathe with gills.",))),
    Kind(name="bird", plural="birds", category="animal", sort="animal", draw=draw_bird,
         colours=("blue", "red", "yellow", "brown", "black", "white"),
         shape="round", parts="wings, a beak and a tail",
         facts=Facts(is_="an animal with feathers", found=("live", "in trees"), fly=True,
                     extra=("birds build nests.", "birds sing in the morning."))),
    Kind(name="cat", plural="cats", category="animal", sort="animal", draw=draw_cat,
         colours=("black", "white", "grey", "orange", "brown"),
         parts="pointed ears, whiskers and a tail", texture="furry",
         facts=Facts(is_="a pet", found=("live", "in houses"),
                     extra=("cats like milk.", "a cat says meow.", "cats chase mice."))),
    Kind(name="frog", plural="frogs", category="animal", sort="animal", draw=draw_frog,
         colours=("green", "brown", "yellow", "blue"), shape="wide", parts="big eyes and legs",
         facts=Facts(is_="an animal", found=("live", "in ponds"), swim=True,
                     extra=("frogs can jump far.", "a frog says ribbit.", "frogs eat flies."))),
    Kind(name="snake", plural="snakes", category="animal", sort="animal", draw=draw_snake,
         colours=("green", "brown", "yellow", "red", "black"), shape="long", parts="no legs", texture="striped",
         facts=Facts(is_="an animal", found=("live", "in the grass"), swim=True,
                     extra=("a snake says hiss.", "some snakes are dangerous."))),
    Kind(name="ladybird", plural="ladybirds", category="animal", sort="insect", draw=draw_ladybird,
         colours=("red", "orange", "yellow"), shape="round", parts="six legs", texture="spotted",
         facts=Facts(is_="a small insect", found=("live", "in gardens"), fly=True,
                     extra=("ladybirds eat tiny bugs.",))),
    Kind(name="butterfly", plural="butterflies", category="animal", sort="insect", draw=draw_butterfly,
         colours=("blue", "orange", "yellow", "purple", "pink", "red", "white"),
         shape="wide", parts="four wings and two antennae",
         facts=Facts(is_="an insect", found=("live", "in fields of flowers"), fly=True,
                     extra=("a butterfly was once a caterpillar.", "butterflies drink from flowers."))),
    Kind(name="snail", plural="snails", category="animal", sort="animal", draw=draw_snail,
         colours=("brown", "yellow", "pink", "orange", "grey"), shape="curly", parts="a shell and two feelers",
         facts=Facts(is_="a small animal", found=("live", "in gardens"),
                     extra=("snails move very slowly.", "a snail carries its house on its back."))),

    Kind(name="car", plural="cars", category="vehicle", sort="vehicle", draw=draw_car,
         colours=ANY_COLOUR, shape="long", parts="wheels and windows",
         facts=Facts(is_="a vehicle", use="driving", found=("are found", "on roads"),
                     extra=("cars need fuel or electricity to go.",))),
    Kind(name="boat", plural="boats", category="vehicle", sort="vehicle", draw=draw_boat,
         colours=ANY_COLOUR, shape="flat", parts="two sails",
         facts=Facts(is_="a vehicle that goes on water", use="sailing", found=("are found", "on the sea"),
                     extra=("boats float on water.",))),
    Kind(name="plane", plural="planes", category="vehicle", sort="vehicle", draw=draw_plane,
         colours=("white", "grey", "blue", "red"), shape="long", parts="wings and a tail",
         facts=Facts(is_="a flying machine", use="travelling far", found=("are found", "at airports"), fly=True,
                     extra=("planes fly above the clouds.",))),
    Kind(name="rocket", plural="rockets", category="vehicle", sort="vehicle", draw=draw_rocket,
         colours=("white", "red", "grey", "blue", "orange"), shape="pointed", parts="fins and a round window",
         facts=Facts(is_="a machine that goes to space", use="going to space",
                     found=("are found", "at launch pads"), fly=True,
                     extra=("rockets are very loud.", "rockets carry people to the moon."))),

    Kind(name="hammer", plural="hammers", category="tool", sort="tool", draw=draw_hammer,
         colours=("grey", "black", "red", "blue"), shape="long", parts="a handle and a heavy head",
         facts=Facts(is_="a tool", use="hitting nails", found=("are found", "in toolboxes"),
                     extra=("builders use hammers every day.",))),
    Kind(name="key", plural="keys", category="tool", sort="tool", draw=draw_key,
         colours=("yellow", "grey", "brown"), shape="long", parts="a ring and teeth",
         facts=Facts(is_="a small tool", use="opening doors", found=("are found", "in pockets"),
                     extra=("if you lose your key you can not get in.",))),
    Kind(name="cup", plural="cups", category="tool", sort="dish", draw=draw_cup,
         colours=ANY_COLOUR, shape="round", parts="a handle",
         facts=Facts(is_="a dish", use="drinking", found=("are found", "in kitchens"),
                     extra=("people drink tea from cups.",))),

    Kind(name="sun", plural="suns", category="sky", sort="thing", draw=draw_sun,
         colours=("yellow", "orange", "red"), shape="round", parts="rays",
         facts=Facts(is_="a very hot ball of fire", use="giving light", found=("are seen", "in the sky"),
                     extra=("the sun rises in the morning.", "the sun makes the day warm."))),
    Kind(name="moon", plural="moons", category="sky", sort="thing", draw=draw_moon,
         colours=("yellow", "white", "grey"), shape="curved", parts="two sharp points",
         facts=Facts(is_="a big rock that goes around the earth", found=("are seen", "in the night sky"),
                     extra=("the moon shines at night.",))),
    Kind(name="star", plural="stars", category="sky", sort="thing", draw=draw_star,
         colours=("yellow", "white", "orange", "blue", "pink"), shape="pointed", parts="five points",
         facts=Facts(is_="a sun that is very far away", found=("are seen", "in the night sky"),
                     extra=("there are more stars than anyone can count.",))),
    Kind(name="cloud", plural="clouds", category="sky", sort="thing", draw=draw_cloud,
         colours=("white", "grey", "black"), shape="fluffy", parts="round bumps",
         facts=Facts(is_="water floating in the air", found=("are seen", "in the sky"),
                     extra=("rain falls from dark clouds.",))),
    Kind(name="balloon", plural="balloons", category="sky", sort="toy", draw=draw_balloon,
         colours=ANY_COLOUR, shape="round", parts="a string",
         facts=Facts(is_="a toy filled with air", use="parties", found=("are found", "at parties"), fly=True,
                     extra=("a balloon pops if you poke it.",))),
    Kind(name="kite", plural="kites", category="sky", sort="toy", draw=draw_kite,
         colours=ANY_COLOUR, shape="flat", parts="a long tail with bows",
         facts=Facts(is_="a toy that rides the wind", use="playing in the wind",
                     found=("are seen", "in windy parks"), fly=True,
                     extra=("children hold a kite by its string.",))),

    Kind(name="house", plural="houses", category="building", sort="building", draw=draw_house,
         colours=("red", "white", "yellow", "brown", "blue", "grey"), parts="a roof, a door and windows",
         facts=Facts(is_="a building", use="living in", found=("are found", "in towns"),
                     extra=("families live in houses.",))),
    Kind(name="tower", plural="towers", category="building", sort="building", draw=draw_tower,
         colours=("grey", "brown", "white", "yellow"), shape="tall", parts="battlements",
         facts=Facts(is_="a tall building", use="looking far away", found=("are found", "in castles"),
                     extra=("kings once lived near towers.",))),

    Kind(name="square", plural="squares", category="shape", sort="shape", draw=draw_square,
         colours=ANY_COLOUR, shape="flat", parts="four corners",
         facts=Facts(is_="a shape", use="drawing", found=("are found", "in maths books"),
                     extra=("a square has four sides of the same length.",))),
    Kind(name="triangle", plural="triangles", category="shape", sort="shape", draw=draw_triangle,
         colours=ANY_COLOUR, shape="pointed", parts="three corners",
         facts=Facts(is_="a shape", use="drawing", found=("are found", "in maths books"),
                     extra=("a triangle has three sides.",))),
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
# NONSENSE_NAMES were looked at while the tokenizer and the name grammar were tuned (README), so they
# are no longer a fair sample of unseen names. HELD_BACK_NAMES are a second list, written down once
# and never used for any choice: never tune anything on them. Like NONSENSE_NAMES they never occur
# in training text (text.made_up_name rejects both lists).
HELD_BACK_NAMES: tuple[str, ...] = ("tulver", "spog", "nork", "fendle", "tupa", "kepa", "mipen", "dofa", "sibu",
                                    "lorpa", "gazzle", "pimwit", "frasp", "nolk", "vatch", "jindle", "roff",
                                    "quelp", "zanter", "bisk")

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
    """`count` identical objects around the position's anchor, each a little jittered, turned and
    maybe mirrored: what a caption calls one group ('two red apples on the left')."""
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
          if all(math.dist(rgb, COLOURS[o.colour]) > MIN_CONTRAST for o in objects)]
    return rng.choice(ok or list(BACKGROUNDS))


def _staged(rng: random.Random, objects: list[Obj]) -> Scene:
    """The objects on a background they stand out from, with pixel noise one time in three."""
    return Scene(objects, _pick_background(rng, objects), rng.choice((0.0, 0.0, rng.uniform(2, 10))))


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
    return _staged(rng, objects)


def lone_scene(rng: random.Random, kind: str, colour=None, size=None, position="middle") -> Scene:
    """A single object: what the binding and knowledge tasks show."""
    colour = colour or rng.choice(KINDS[kind].colours)
    objects = _group_objects(rng, kind, colour, size or rng.choice(SIZES), position, 1)
    return _staged(rng, objects)


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


def naming_caption(scene: Scene) -> str:
    """A lone thing named by its kind in the paper's naming sentence: 'This is an apple.'"""
    name = KINDS[scene.objects[0].kind].name
    return f"This is {article(name)} {name}."


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

    def __init__(self, seed=0, image_size=64, split="train", length=100_000, kinds=None, naming_captions=0.0):
        if split not in SPLITS:
            raise ValueError(f"World: unknown split {split!r}; choose one of {sorted(SPLITS)}")
        unknown = [k for k in (kinds or ()) if k not in KINDS]
        if unknown:
            raise ValueError(f"World: unknown kinds {unknown}")
        self.seed, self.image_size, self.split, self.length = seed, image_size, split, length
        self.kinds = tuple(kinds) if kinds else SPLITS[split]
        self.naming_captions = naming_captions

    def __len__(self):
        return self.length

    def _rng(self, i) -> random.Random:
        return random.Random(f"world/{self.seed}/{self.split}/{i}")

    def scene_and_caption(self, i) -> tuple[Scene, str, random.Random]:
        """Everything but the pixels (cheap: used by tests and by text-side code)."""
        rng = self._rng(i)
        scene = sample_scene(rng, self.kinds)
        text = caption(scene, rng)
        # its own RNG, so the scene and its pixels do not depend on the share
        if self.naming_captions and len(scene.objects) == 1 and \
                random.Random(f"naming/{self.seed}/{self.split}/{i}").random() < self.naming_captions:
            text = naming_caption(scene)
        return scene, text, rng

    def __getitem__(self, i):
        if not 0 <= i < self.length:
            raise IndexError(f"World index {i} out of range (length {self.length})")
        scene, text, rng = self.scene_and_caption(i)
        return render(scene, self.image_size, rng), text, scene
