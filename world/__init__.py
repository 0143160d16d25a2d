"""
The embedded default data: a small drawn world, its captions, a text corpus about it, and the
few-shot episodes that eval.py scores.

Frozen (Tsimpoukelli et al. 2021) trains its language model on a large web text corpus, its
vision encoder on Conceptual Captions (3M image-caption pairs), and evaluates on VQAv2, OKVQA,
miniImageNet and Visual Genome. None of that can be downloaded at run time, so this package
makes a world small enough to generate on the fly and rich enough for the paper's claims to show
up. It reads as chapters, each importing only the ones before it:

1. drawing.py   colours, backgrounds, and how each of the 29 kinds of thing is drawn (Pillow)
2. scenes.py    the kinds and what is true of them, five of them held out from stage-prefix
                training; scenes, their images and captions; the `World` image-caption dataset
3. fewshot.py   the layout of a few-shot prompt, built once for both the corpus and the episodes
4. text.py      the stage-lm text corpus: facts, Q/A, stories, and the in-context passages
5. episodes.py  the paper's evaluations re-made on the world, plus a plain copy task
   __main__.py  python -m world --sheet out/sheet.png | --text 2000 | --bench | --mix 5000

Differences from the paper's data: the images are icons, not photographs, and there are 29
kinds instead of thousands of concepts; "outside knowledge" is the handful of facts written into
the corpus; miniImageNet's held-out classes are our five held-out kinds; the corpus is generated
from templates, so it is repetitive by design and in-context skills are planted in it on purpose
(a web corpus has them for free).

Everything is deterministic: every image, document and episode gets its own random.Random seeded
from a string like "world/<seed>/<split>/<index>" (string seeds hash with SHA-512, stable across
processes), so DataLoader workers need no coordination. The global RNG is never touched.
"""

# The names the rest of the repository uses. `world.episodes` is the function: it hides the module
# episodes.py, whose names `from world.episodes import ...` still reaches.
from .drawing import COLOURS, draw_sheet
from .scenes import (HELD_BACK_NAMES, HELD_OUT_KINDS, KINDS, NONSENSE_NAMES, POSITIONS, SEEN_KINDS, SPLITS, Facts,
                     Kind, Obj, Scene, World, caption, describe, lone_scene, noun_phrase, parse_caption, render,
                     sample_scene)
from .fewshot import HELD_BACK_NAMINGS, PAPER_NAMING, TRAINED_NAMINGS, Naming
from .text import PASSAGES, TextMix, corpus_text, fact_sentences, made_up_name, text_document, text_documents
from .episodes import EPISODE_SPLITS, TASKS, Episode, episode_text, episodes

__all__ = ["COLOURS", "draw_sheet",
           "HELD_BACK_NAMES", "HELD_OUT_KINDS", "KINDS", "NONSENSE_NAMES", "POSITIONS", "SEEN_KINDS", "SPLITS", "Facts", "Kind", "Obj",
           "Scene", "World", "caption", "describe", "lone_scene", "noun_phrase", "parse_caption", "render", "sample_scene",
           "PASSAGES", "TextMix", "corpus_text", "fact_sentences", "made_up_name", "text_document", "text_documents",
           "HELD_BACK_NAMINGS", "PAPER_NAMING", "TRAINED_NAMINGS", "Naming",
           "EPISODE_SPLITS", "TASKS", "Episode", "episode_text", "episodes"]
