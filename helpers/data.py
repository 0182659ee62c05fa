"""Benchmarks as sample records: loaders, the paper's prompts, the visual prompt, answer scoring.

Every loader goes through :func:`datasets.load_dataset`: with a benchmark's hub id and pinned revision
for real runs, or with ``data_files=`` pointing at local parquet/json files of the same schema (tests, CI,
and anyone holding a local copy). Both paths run the same row-to-:class:`Sample` code.

Prompts follow the authors' released code (see ``docs/paper-notes.md``, "Benchmarks and prompts"); each
builder returns the *user* prompt, starting with ``"<image>\\n"``. The model's chat template is applied
afterwards by :meth:`helpers.models.ModelSpec.format_prompt`.

Hub ids and revisions (:data:`HUB`) could not be checked from this machine (no hub access). The
revisions were read off the hub's web pages or the authors' scripts; each entry says where from.

Bad input raises a :class:`DataError` subclass naming the sample and what to do. With
``on_error="skip"`` a loader drops the bad sample instead, logs a warning, and lists it in the returned
:class:`SampleList`'s ``skipped``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import numbers
import random
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from .env import DATA_DIR

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
OnError = Literal["raise", "skip"]

IMAGE_PREFIX = "<image>\n"
QUESTION_FIELDS = {"general": "general_question", "object": "obj_question", "super": "super_question"}
QUESTION_KINDS = tuple(QUESTION_FIELDS)
PROMPT_KINDS = ("visual", "plain")
BOX_SENTENCE = " The exemplary object is within the rectangle."
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."
QBENCH_INSTRUCTION = "Choose between one of the options as follows:"
LETTERS = "ABCDEFGH"
BOX_COLOR = (255, 0, 0)
SHAPES = "shapes"  # the embedded synthetic PointQA-style set: its one name (folder data/shapes-pointqa)
SHAPES_DIR = DATA_DIR / "shapes-pointqa"
DEFAULT_IMAGE_CACHE = Path.home() / ".cache" / "visual-heads" / "images"


# --------------------------------------------------------------------------------------------- errors
class DataError(ValueError):
    """A benchmark sample or split that cannot be used; the message names it and says what to do."""


class MissingImageError(DataError, FileNotFoundError):
    """The image file of a sample does not exist (or could not be fetched)."""


class CorruptImageError(DataError):
    """The image file exists but PIL cannot read it."""


class EmptySplitError(DataError):
    """A split (after filtering) holds no samples."""


class BoxOutsideImageError(DataError):
    """A bounding box is degenerate or lies (partly) outside its image."""


class ImageTooLargeError(DataError):
    """An image has more pixels than PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``)."""


class FieldError(DataError):
    """A row's field is missing or of the wrong kind; the message names the row and the field."""


# --------------------------------------------------------------------------------------------- records
@dataclass
class Sample:
    """One benchmark question, ready for a model.

    ``image`` is the image *as stored* (nothing drawn): a path or the encoded bytes of an embedded image
    (decoded lazily by :meth:`load_image`, so a split of thousands of images stays small), or a ``PIL.Image``. :meth:`model_image` is what the model sees (red boxes drawn for visual prompts).
    ``prompt`` is the user prompt (starts with ``"<image>\\n"``; apply ``spec.format_prompt``).
    ``answer`` is the gold answer in the form scoring compares: a letter (``answer_type="letter"``),
    ``"yes"``/``"no"`` (``"yes_no"``) or a count as a string (``"count"``).
    ``boxes`` are pixel ``(x1, y1, x2, y2)`` in the stored image. ``question_kind`` is
    general/object/super for PointQA, else None; ``prompt_kind`` is visual (box drawn) or plain.
    """

    id: str
    image: Any
    question: str
    answer: str
    prompt: str
    benchmark: str
    answer_type: Literal["letter", "yes_no", "count"]
    options: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()
    question_kind: str | None = None
    prompt_kind: Literal["visual", "plain"] = "plain"
    meta: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> Image.Image:
        """The stored image as RGB; a path or embedded image bytes are decoded here."""
        if isinstance(self.image, Image.Image):
            return to_rgb(self.image, f"sample {self.id}")
        if isinstance(self.image, (bytes, bytearray)):
            try:
                with Image.open(io.BytesIO(self.image)) as image:
                    return to_rgb(image, f"sample {self.id}")
            except Image.DecompressionBombError as err:
                raise _too_large("its embedded image", self.id, err) from err
            except (OSError, SyntaxError, ValueError) as err:
                if isinstance(err, DataError):
                    raise
                raise CorruptImageError(f"sample {self.id}: its embedded image cannot be decoded ({err})") from err
        return open_image(Path(self.image), self.id)

    def model_image(self) -> Image.Image:
        """The image the model sees: boxes drawn in red for ``prompt_kind="visual"``, else unchanged."""
        image = self.load_image()
        return draw_boxes(image, self.boxes) if self.prompt_kind == "visual" and self.boxes else image


def record_id_of(sample: Sample) -> str:
    """The record ``sample`` was made from: ``meta["record_id"]`` (a PointQA record gives one sample per question
    kind x prompt kind), else the sample id."""
    return str(sample.meta.get("record_id", sample.id))


def image_id_of(sample: Sample, *, pixels: bool = False) -> str:
    """Which picture ``sample`` shows: ``meta["image_id"]`` when present (the scenes sets), else a digest of its
    pixels, ``"sha1:<40 hex digits>"`` (the stored image as RGB, :meth:`Sample.load_image`, nothing drawn), so two
    records on one picture (real PointQA records can share an image file) get one id whatever the file or encoding.

    ``pixels=True``: the digest even where ``meta`` names an image id (sets generated from different seeds reuse
    the same ids for different pictures). An image id is only unique within its benchmark; a digest everywhere.
    """
    if not pixels and sample.meta.get("image_id") is not None:
        return str(sample.meta["image_id"])
    return pixel_digest(sample.load_image())


def pixel_digest(image: Image.Image) -> str:
    """``"sha1:<hex>"`` of an image's mode, size and pixel bytes: equal for equal pictures, whatever the encoding."""
    digest = hashlib.sha1(f"{image.mode} {image.size[0]}x{image.size[1]} ".encode())
    digest.update(image.tobytes())
    return f"sha1:{digest.hexdigest()}"


class SampleList(list):
    """A list of :class:`Sample` with ``skipped``: ``[(sample id, reason), ...]`` dropped by ``on_error="skip"``."""

    def __init__(self, samples: Iterable[Sample] = (), skipped: Iterable[tuple[str, str]] = ()):
        super().__init__(samples)
        self.skipped: list[tuple[str, str]] = list(skipped)


@dataclass(frozen=True)
class HubSource:
    """Where a benchmark lives on the Hugging Face hub. ``verified=False``: not checked by a download."""

    repo: str
    split: str
    revision: str
    config: str | None = None
    data_file: str | None = None
    verified: bool = False
    note: str = ""


HUB = {
    "pointqa": HubSource(
        "mucai/ViP-LLaVA-Instruct", split="train", data_file="pointQA_twice_test.json",
        revision="c885fc27808a7e91382619ff26ab438e7a1cfd3b",
        note="LookTwice-QA test json in ViP-LLaVA format; revision from the authors' scripts/pointQA-att.sh. "
             "Images are Visual Genome (not on the hub): pass image_folder or image_url."),
    "pope": HubSource(
        "lmms-lab/POPE", config="default", split="test", revision="4db1276663dfa5eb8ad16a52d24c31a09e470896",
        note="revision read from the hub's file browser (main, 'Upload dataset'); COCO; filtered to category"),
    "mmbench": HubSource(
        "lmms-lab/MMBench", config="en", split="dev", revision="ac155b9c318a37ac5a75267b18cbca12cbcc6bab",
        note="revision read from the hub's README history (configs cn, en)"),
    "seed": HubSource(
        "lmms-lab/SEED-Bench", split="test", revision="main",
        note="no full commit hash seen: pass revision= to pin; rows filtered to data_type == 'image'"),
    "qbench": HubSource(
        "q-future/Q-Bench-HF", split="dev", revision="main",
        note="LLVisionQA; only the short hash 482288d was seen: pass revision= to pin"),
}


# --------------------------------------------------------------------------------------------- images
def line_width(size: tuple[int, int]) -> int:
    """The paper's rectangle line width for an image of ``size = (W, H)``: ``max(1, int(3 * max(W, H) / 336))``."""
    return max(1, int(3 * max(size) / 336))


def draw_boxes(image: Image.Image, boxes: Sequence[Box], color: tuple[int, int, int] = BOX_COLOR,
               width: int | None = None) -> Image.Image:
    """A copy of ``image`` with a red rectangle of ``width`` pixels drawn just outside each box.

    Boxes are pixel ``(x1, y1, x2, y2)`` with ``x2``/``y2`` exclusive (rounded to whole pixels); the
    outline covers ``x1 - width .. x1 - 1`` etc., clamped to the image, so the object itself stays
    visible. ``width`` defaults to the paper's :func:`line_width`. This is the same drawing as
    :func:`helpers.shapes.render` with ``draw_box=True`` (the toy models are trained on it).
    """
    out = to_rgb(image, "draw_boxes").copy()
    draw = ImageDraw.Draw(out)
    lw = line_width(out.size) if width is None else int(width)
    if lw < 1:
        raise ValueError(f"line width must be at least 1, got {width}")
    W, H = out.size
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = box_numbers(box, f"draw_boxes: box {i}")
        if not (x1 < x2 and y1 < y2 and x2 > 0 and y2 > 0 and x1 < W and y1 < H):
            raise BoxOutsideImageError(f"draw_boxes: box {i} {list(box)} (pixel x1,y1,x2,y2) is empty or lies outside "
                                       f"the {W}x{H} image, so no rectangle would be drawn")
        x1, y1, x2, y2 = (round(v) for v in (x1, y1, x2, y2))
        draw.rectangle([max(0, x1 - lw), max(0, y1 - lw), min(W - 1, x2 - 1 + lw), min(H - 1, y2 - 1 + lw)],
                       outline=color, width=lw)
    return out


def to_rgb(image: Image.Image, what: str = "image") -> Image.Image:
    """``image`` as 8-bit RGB. 16-bit and 32-bit integer greyscale (``I;16``, ``I``, values 0..65535) is scaled
    by 255/65535 (``convert("RGB")`` would clip it to white); float greyscale (``F``) in [0, 1] by 255.
    Other value ranges raise :class:`CorruptImageError` naming ``what`` (e.g. ``"sample 12"``).
    """
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" else 65535.0
        if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > top):
            raise CorruptImageError(f"{what}: a mode-{image.mode} image with values from {values.min():g} to "
                                    f"{values.max():g}, outside 0..{top:g}; convert it to 8-bit RGB yourself")
        grey = np.rint(values * (255.0 / top)).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return image.convert("RGB")


def box_numbers(box: Any, where: str) -> Box:
    """``box`` as four finite floats ``(x1, y1, x2, y2)``; :class:`FieldError` naming ``where`` otherwise."""
    values = list(box) if isinstance(box, (list, tuple)) else None
    if values is None or len(values) != 4 or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise FieldError(f"{where}: box {box!r} is not four finite numbers (x1, y1, x2, y2)")
    return tuple(float(v) for v in values)


def _too_large(what: str, sample_id: str, err: Exception) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"sample {sample_id}: {what} is larger than PIL's limit against decompression bombs "
        f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}): {err}. If you trust the file, raise "
        "PIL.Image.MAX_IMAGE_PIXELS; else pass on_error='skip' to leave the sample out.")


def check_image(path: Path, sample_id: str) -> tuple[int, int]:
    """The ``(W, H)`` of an image file, after a cheap integrity check (header and, for PNG, checksums).

    Raises :class:`MissingImageError` / :class:`CorruptImageError` naming the file and the sample.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingImageError(f"sample {sample_id}: image file {path} does not exist. Check the image folder "
                                "(Visual Genome for PointQA) or pass image_url= to fetch images into a cache.")
    try:
        with Image.open(path) as probe:
            size = probe.size
            probe.verify()
        return size
    except Image.DecompressionBombError as err:
        raise _too_large(f"image file {path}", sample_id, err) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _corrupt(path, sample_id, err) from err


def open_image(path: Path, sample_id: str) -> Image.Image:
    """The image file decoded as RGB (16-bit scaled, :func:`to_rgb`); errors as in :func:`check_image`."""
    check_image(path, sample_id)
    try:
        with Image.open(path) as image:
            return to_rgb(image, f"sample {sample_id}: image file {path}")
    except Image.DecompressionBombError as err:
        raise _too_large(f"image file {path}", sample_id, err) from err
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise _corrupt(path, sample_id, err) from err


def _corrupt(path: Path, sample_id: str, err: Exception) -> CorruptImageError:
    return CorruptImageError(f"sample {sample_id}: image file {path} cannot be read ({err}). "
                             "Re-download it, or pass on_error='skip' to leave the sample out.")


def check_boxes(boxes: Sequence[Box], size: tuple[int, int], sample_id: str, tolerance: float = 1.0) -> None:
    """Raise :class:`BoxOutsideImageError` unless every box has ``x1 < x2``, ``y1 < y2`` and lies in the image.

    ``tolerance`` (pixels) allows annotation boxes that overshoot the border by rounding.
    """
    width, height = size
    for box in boxes:
        x1, y1, x2, y2 = box_numbers(box, f"sample {sample_id}")
        inside = (x1 >= -tolerance and y1 >= -tolerance and x2 <= width + tolerance
                  and y2 <= height + tolerance)
        if not (x1 < x2 and y1 < y2 and inside):
            raise BoxOutsideImageError(
                f"sample {sample_id}: box {list(box)} (pixel x1,y1,x2,y2) is empty or outside the "
                f"{width}x{height} image. Fix the annotation or pass on_error='skip'.")


def fetch_image(url_base: str, relative: str, cache_dir: Path, sample_id: str) -> Path:
    """Download ``url_base/relative`` into ``cache_dir/relative`` once; return the local path.

    Any URL scheme urllib knows works (``https://``, ``file://``). Failures raise :class:`MissingImageError`.
    """
    target = Path(cache_dir) / relative
    if target.is_file():
        return target
    url = url_base.rstrip("/") + "/" + urllib.parse.quote(relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with urllib.request.urlopen(url, timeout=60) as response, tempfile.NamedTemporaryFile(
                dir=target.parent, delete=False) as tmp:
            shutil.copyfileobj(response, tmp)
        Path(tmp.name).replace(target)
    except OSError as err:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
        raise MissingImageError(f"sample {sample_id}: could not fetch image {url} ({err}). "
                                "Check image_url, or download the images and pass image_folder.") from err
    return target


# --------------------------------------------------------------------------------------------- prompts
def box_in_words(box: Box, size: tuple[int, int], style: Literal["pixels", "normalised"] = "pixels") -> str:
    """A box as text: ``[x1, y1, x2, y2]`` in pixels, or normalised to [0, 1] with two decimals."""
    if style == "pixels":
        return "[" + ", ".join(str(round(v)) for v in box) + "]"
    width, height = size
    scaled = (box[0] / width, box[1] / height, box[2] / width, box[3] / height)
    return "[" + ", ".join(f"{v:.2f}" for v in scaled) + "]"


def pointqa_prompt(question: str, prompt_kind: Literal["visual", "plain"] = "visual",
                   plain_text: Literal["rectangle", "coordinates", "none"] = "rectangle",
                   box_text: str | None = None) -> str:
    """The paper's free-form PointQA prompt.

    ``<image>\\n{question} The exemplary object is within the rectangle.\\nAnswer the question using a
    single word or phrase.`` For ``prompt_kind="plain"`` nothing is drawn, and ``plain_text`` (a choice,
    because the paper's notes and our design differ) decides what the text says about the box:

    - ``"rectangle"`` (default; what the authors' code does): the same sentence as the visual prompt,
      although no rectangle is drawn;
    - ``"coordinates"``: the box given only in words (the design's reading), ``... within the rectangle
      {box_text}.`` with ``box_text`` from :func:`box_in_words`;
    - ``"none"``: the sentence left out (the authors' second PointQA prompt variant).
    """
    if prompt_kind == "visual" or plain_text == "rectangle":
        sentence = BOX_SENTENCE
    elif plain_text == "coordinates":
        if box_text is None:
            raise ValueError("plain_text='coordinates' needs box_text (see box_in_words)")
        sentence = f" The exemplary object is within the rectangle {box_text}."
    elif plain_text == "none":
        sentence = ""
    else:
        raise ValueError(f"plain_text must be 'rectangle', 'coordinates' or 'none', not {plain_text!r}")
    return f"{IMAGE_PREFIX}{question}{sentence}{SHORT_ANSWER}"


def multiple_choice_prompt(question: str, options: Sequence[str]) -> str:
    """MMBench / SEED-Bench / PointQA multiple choice: ``<image>\\n{q}\\nA. …\\nB. …\\n{instruction}`` (no hint)."""
    lines = [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    return IMAGE_PREFIX + "\n".join([question, *lines, LETTER_INSTRUCTION])


def pope_prompt(question: str) -> str:
    """POPE: ``<image>\\n{question}`` (the question already asks for yes/no)."""
    return f"{IMAGE_PREFIX}{question}"


def qbench_prompt(question: str, options: Sequence[str]) -> str:
    """Q-Bench (LLVisionQA): ``<image>\\n{q}\\nChoose between one of the options as follows:\\nA. …\\n``.

    Each option line ends with a newline, the last one included, as in the authors' code.
    """
    lines = "".join(f"{LETTERS[i]}. {option}\n" for i, option in enumerate(options))
    return f"{IMAGE_PREFIX}{question}\n{QBENCH_INSTRUCTION}\n{lines}"


def count_options(answer: int, rng: random.Random, mode: Literal["delta", "range"] = "delta",
                  spread: int = 3) -> tuple[list[str], int]:
    """Four numeric options for a count question and the index of the right one.

    ``mode="delta"``: three distractors drawn from ``answer ± spread`` (non-negative, not the answer);
    ``mode="range"``: drawn from ``1..spread``. The authors' code has both; their ``spread`` is not
    published, 3 is our default.
    """
    if mode == "delta":
        pool = [i for i in range(answer - spread, answer + spread + 1) if i >= 0 and i != answer]
    elif mode == "range":
        pool = [i for i in range(1, spread + 1) if i != answer]
    else:
        raise ValueError(f"mode must be 'delta' or 'range', not {mode!r}")
    if len(pool) < 3:
        raise ValueError(f"count {answer} with mode={mode!r}, spread={spread} leaves {len(pool)} distractors; "
                         "raise spread")
    options = rng.sample(pool, 3) + [answer]
    rng.shuffle(options)
    return [str(o) for o in options], options.index(answer)


@dataclass(frozen=True)
class PointQAOptions:
    """How PointQA records become prompts (each field a documented choice).

    answer_format: ``"free"`` (single word or phrase, gold = the count) or ``"choice"`` (four numeric
        options, gold = the letter; the prompt carries no box sentence, as in the authors' code).
    plain_text: what a plain prompt says about the box, see :func:`pointqa_prompt`.
    box_style: ``"pixels"`` or ``"normalised"`` for ``plain_text="coordinates"``.
    options_mode, options_spread, seed: see :func:`count_options`; the options depend only on
        ``seed`` and the record id, so every question and prompt kind of a record shares them.
    box_tolerance: pixels a box may overshoot the image border (see :func:`check_boxes`).
    """

    answer_format: Literal["free", "choice"] = "free"
    plain_text: Literal["rectangle", "coordinates", "none"] = "rectangle"
    box_style: Literal["pixels", "normalised"] = "pixels"
    options_mode: Literal["delta", "range"] = "delta"
    options_spread: int = 3
    seed: int = 0
    box_tolerance: float = 1.0


# --------------------------------------------------------------------------------------------- scoring
NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
NUMBER_WORDS["none"] = 0
_LETTER_START = re.compile(r"^[\s\"'*(\[]*([A-H])(?:$|[\s.,:;)\]\"'*])")
_LETTER_SAID = re.compile(r"(?i:answer|option|choice)(?i:\s+is)?\s*[:\-]?\s*[(\[]?([A-H])\b")
_NUMBER = re.compile(r"\b(\d+|" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)


def normalise_letter(text: str, options: Sequence[str] = ()) -> str | None:
    """The option letter in a model output: ``"A."``, ``"(B)"``, ``"C) cat"``, ``"Answer: D"`` → letter.

    Falls back to matching the whole output against an option's text. None when nothing matches.
    A lone lowercase ``a`` is the article, not option A.
    """
    for pattern in (_LETTER_START, _LETTER_SAID):
        match = pattern.search(text)
        if match:
            return match.group(1)
    cleaned = text.strip().strip(".").strip().lower()
    for i, option in enumerate(options):
        if cleaned and cleaned == str(option).strip().strip(".").lower():
            return LETTERS[i]
    return None


def normalise_yes_no(text: str) -> str | None:
    """``"yes"`` or ``"no"``: the first standalone yes/no word (``"Yes, there is"`` → yes); else None."""
    match = re.search(r"\b(yes|no)\b", text.lower())
    return match.group(1) if match else None


def normalise_count(text: str) -> int | None:
    """The first number in digits or words (zero…twenty, none): ``" 3 people"`` → 3, ``"three"`` → 3."""
    match = _NUMBER.search(text)
    if not match:
        return None
    token = match.group(1).lower()
    return int(token) if token.isdigit() else NUMBER_WORDS[token]


def normalise(text: str, answer_type: str, options: Sequence[str] = ()) -> str | None:
    """A model output in the gold answer's form (letter, yes/no, count as a string), or None."""
    if answer_type == "letter":
        return normalise_letter(text, options)
    if answer_type == "yes_no":
        return normalise_yes_no(text)
    if answer_type == "count":
        count = normalise_count(text)
        return None if count is None else str(count)
    raise ValueError(f"unknown answer_type {answer_type!r}")


def is_correct(sample: Sample, output: str, strict: bool = False) -> bool:
    """Whether ``output`` answers ``sample``.

    Default: the normalised output (:func:`normalise`) equals the gold answer. ``strict=True`` is the
    authors' code: the stripped output equals the gold exactly (case-insensitive), except for yes/no
    where the first word, letters only, is compared (their POPE scoring).
    """
    gold = sample.answer.strip().lower()
    if strict:
        if sample.answer_type == "yes_no":
            words = output.split()
            return bool(words) and re.sub(r"[^a-zA-Z]", "", words[0]).lower() == gold
        return output.strip().lower() == gold
    got = normalise(output, sample.answer_type, sample.options)
    return got is not None and got.lower() == gold


_LEADING = {  # the answer an output opens with; any non-Latin continuation is allowed ("Yes答案No" opens with yes)
    "yes_no": re.compile(r"^[^A-Za-z0-9]*(yes|no)(?![A-Za-z0-9])", re.IGNORECASE),
    "letter": re.compile(r"^[^A-Za-z0-9]*([A-H])(?![A-Za-z0-9])"),  # capitals only: a lone "a" is the article
    "count": re.compile(r"^[^A-Za-z0-9]*(\d+|" + "|".join(NUMBER_WORDS) + r")(?![A-Za-z0-9])", re.IGNORECASE),
}


def leading_answer(text: str, answer_type: str) -> str | None:
    """The answer ``text`` opens with, in the gold answer's form, whatever follows it; else None.

    Unlike :func:`normalise`, which reads a whole output, this looks only at its first word of Latin letters
    or digits (other characters before and after it are skipped): ``"Yes答案No"`` → ``"yes"``,
    ``"B) red"`` → ``"B"``, ``"3 cats"`` → ``"3"``, ``"Nothing"`` → None. It separates a model that still picks
    the right option but no longer stops (masked heads that break the answer format) from one that picks the
    wrong option.
    """
    if answer_type not in _LEADING:
        raise ValueError(f"unknown answer_type {answer_type!r}: one of {sorted(_LEADING)}")
    match = _LEADING[answer_type].match(text)
    if not match:
        return None
    token = match.group(1) if answer_type == "letter" else match.group(1).lower()
    if answer_type == "count":
        return token if token.isdigit() else str(NUMBER_WORDS[token])
    return token


def answer_form(sample: Sample, output: str) -> dict[str, bool]:
    """How ``output`` answers ``sample`` beyond :func:`is_correct`: ``read`` (the scorer reads an answer from
    it, :func:`normalise` is not None) and ``first_word_correct`` (:func:`leading_answer` equals the gold)."""
    lead = leading_answer(output, sample.answer_type)
    return {"read": normalise(output, sample.answer_type, sample.options) is not None,
            "first_word_correct": lead is not None and lead.lower() == sample.answer.strip().lower()}


def accuracy(samples: Sequence[Sample], outputs: Sequence[str], strict: bool = False) -> float:
    """Share of ``outputs`` (one per sample, same order) that :func:`is_correct` accepts."""
    if len(samples) != len(outputs):
        raise ValueError(f"{len(samples)} samples but {len(outputs)} outputs")
    if not samples:
        raise EmptySplitError("accuracy of an empty sample list")
    return sum(is_correct(s, o, strict) for s, o in zip(samples, outputs, strict=True)) / len(samples)


# --------------------------------------------------------------------------------------------- loading
def load_rows(benchmark: str, data_files: str | Path | Sequence[str | Path] | None = None,
              revision: str | None = None, cache_dir: str | Path | None = None) -> Any:
    """A :class:`datasets.Dataset` of a benchmark's raw rows.

    ``data_files`` (local parquet / json / jsonl in the benchmark's schema) are read with
    ``load_dataset("parquet"|"json", data_files=...)``; otherwise the hub source in :data:`HUB` is used,
    at ``revision`` (default: the pinned one).
    """
    import datasets

    hub = HUB[benchmark]
    if data_files is not None:
        files = [str(data_files)] if isinstance(data_files, (str, Path)) else [str(f) for f in data_files]
        for f in files:
            if "://" not in f and not Path(f).is_file():
                raise FileNotFoundError(f"{benchmark}: data file {f} does not exist")
        builder = "parquet" if files[0].endswith(".parquet") else "json"
        args, kwargs, where = (builder,), {"data_files": files, "split": "train"}, ", ".join(files)
    elif hub.data_file is not None:
        where = f"hf://datasets/{hub.repo}@{revision or hub.revision}/{hub.data_file}"
        args, kwargs = ("json",), {"data_files": where, "split": "train"}
    else:
        args = (hub.repo, hub.config)
        kwargs = {"split": hub.split, "revision": revision or hub.revision}
        where = f"{hub.repo} ({hub.config or 'default'}/{hub.split} at {revision or hub.revision})"
    try:
        rows = datasets.load_dataset(*args, cache_dir=cache_dir, **kwargs)
    except (StopIteration, ValueError) as err:  # how `datasets` reports an empty file
        if isinstance(err, StopIteration) or "corresponds to no data" in str(err):
            raise EmptySplitError(f"{benchmark}: {where} holds no rows") from err
        raise
    if len(rows) == 0:
        raise EmptySplitError(f"{benchmark}: {where} holds no rows")
    return _undecoded(rows)


def _collect(benchmark: str, rows: Any, make: Callable[[Any, int], list[Sample]],
             on_error: OnError, limit: int | None) -> SampleList:
    """Turn rows into samples with ``make(row, i)``, applying the ``on_error`` policy and ``limit`` (rows)."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    n = len(rows) if limit is None else min(limit, len(rows))
    id_column = next((c for c in ("id", "question_id", "index", "data_id") if c in rows.column_names), None)
    out = SampleList()
    for i in range(n):
        row = rows[i]
        try:
            try:
                out.extend(make(row, i))
            except DataError:
                raise
            except (KeyError, TypeError, ValueError) as err:  # a malformed row the field checks did not name
                raise DataError(f"{benchmark}: sample {_row_id(row, i)} cannot be read ({type(err).__name__}: "
                                f"{err}). {SKIP_ADVICE}") from err
        except DataError as err:
            if on_error == "raise":
                raise
            out.skipped.append((str(rows[id_column][i]) if id_column else f"row{i}", str(err)))
    if out.skipped:
        log.warning("%s: skipped %d bad sample(s), first: %s", benchmark, len(out.skipped), out.skipped[0][1])
    if not out:
        raise EmptySplitError(f"{benchmark}: no usable samples ({len(out.skipped)} skipped). "
                              "Check the files, the split and the filters.")
    return out


SKIP_ADVICE = "Fix the row or pass on_error='skip' to leave it out."


def text_field(row: dict, name: str, sid: str) -> str:
    """Field ``name`` of a row as a non-empty string; :class:`FieldError` naming the row and the field otherwise."""
    value = row.get(name)
    if isinstance(value, str) and value.strip():
        return value
    state = "missing" if name not in row else "null" if value is None else f"{value!r}, not a non-empty string"
    raise FieldError(f"sample {sid}: field {name!r} is {state}. {SKIP_ADVICE}")


def _present_field(row: dict, names: Sequence[str], sid: str) -> Any:
    """The first of ``names`` present and not null in ``row``; :class:`FieldError` when none is."""
    for name in names:
        if row.get(name) is not None and str(row[name]).strip() != "":
            return row[name]
    raise FieldError(f"sample {sid}: field {' or '.join(map(repr, names))} is missing or empty. {SKIP_ADVICE}")


def count_field(row: dict, name: str, sid: str) -> int:
    """Field ``name`` as a count: a whole number >= 0, or a string holding one (``"3"``, ``"three"``)."""
    value = row.get(name)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value)
    if isinstance(value, str) and value.strip():
        count = normalise_count(value)
        if count is not None:
            return count
    state = "missing" if name not in row else "null" if value is None else repr(value)
    raise FieldError(f"sample {sid}: field {name!r} is {state}, not a count (a whole number >= 0). {SKIP_ADVICE}")


def boxes_field(row: dict, name: str, sid: str) -> tuple[Box, ...]:
    """Field ``name`` as a non-empty list of boxes, each four finite numbers; :class:`FieldError` otherwise."""
    value = row.get(name)
    if not isinstance(value, (list, tuple)) or not value:
        state = "missing" if name not in row else f"{value!r}"
        raise FieldError(f"sample {sid}: field {name!r} is {state}; it must list one or more pixel boxes "
                         f"[x1, y1, x2, y2]. {SKIP_ADVICE}")
    return tuple(box_numbers(box, f"sample {sid}: field {name!r}, box {j}") for j, box in enumerate(value))


def _row_id(row: Any, i: int) -> str:
    for key in ("id", "question_id", "index", "data_id"):
        if isinstance(row, dict) and row.get(key) not in (None, ""):
            return str(row[key])
    return f"row{i}"


def _row_image(row: dict, key: str, sample_id: str, image_folder: Path | None) -> Any:
    """The image of a row, checked but kept compressed: ``bytes`` (an embedded image), a ``Path``, or a
    PIL image. The column may hold an undecoded ``{"bytes", "path"}`` struct, a list of them (the first
    is used), a PIL image, or a file name under ``image_folder``.
    """
    value = row.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            check_image_bytes(value["bytes"], sample_id)
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, str) and value:
        path = Path(value)
        if not path.is_absolute():
            if image_folder is None:
                raise MissingImageError(f"sample {sample_id}: image {value!r} is a file name; pass image_folder")
            path = Path(image_folder) / value
        check_image(path, sample_id)
        return path
    raise MissingImageError(f"sample {sample_id}: row has no image in column {key!r}")


def check_image_bytes(blob: bytes, sample_id: str) -> tuple[int, int]:
    """The ``(W, H)`` of an embedded (encoded) image, after the integrity check of :func:`check_image`."""
    try:
        with Image.open(io.BytesIO(blob)) as probe:
            size = probe.size
            probe.verify()
        return size
    except Image.DecompressionBombError as err:
        raise _too_large("its embedded image", sample_id, err) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise CorruptImageError(f"sample {sample_id}: its embedded image cannot be read ({err}). "
                                "Pass on_error='skip' to leave the sample out.") from err


def _undecoded(rows: Any) -> Any:
    """``rows`` with image columns left encoded (decoded one at a time by :meth:`Sample.load_image`)."""
    import datasets

    for name, feature in rows.features.items():
        if isinstance(feature, datasets.Image):
            rows = rows.cast_column(name, datasets.Image(decode=False))
        elif isinstance(feature, (datasets.List, datasets.LargeList)) and isinstance(feature.feature, datasets.Image):
            rows = rows.cast_column(name, type(feature)(datasets.Image(decode=False)))
    return rows


def _present(options: Iterable[Any]) -> list[str]:
    """Options that exist: not None, not empty, not a pandas-style 'nan'."""
    return [str(o) for o in options if o is not None and str(o).strip() not in ("", "nan", "None")]


def load_pointqa(path: str | Path | None = None, image_folder: str | Path | None = None, *,
                 image_url: str | None = None, cache_dir: str | Path = DEFAULT_IMAGE_CACHE,
                 question_kinds: Sequence[str] = QUESTION_KINDS, prompt_kinds: Sequence[str] = PROMPT_KINDS,
                 options: PointQAOptions = PointQAOptions(), limit: int | None = None,
                 on_error: OnError = "raise", revision: str | None = None,
                 benchmark: str = "pointqa") -> SampleList:
    """PointQA (LookTwice-QA, ViP-LLaVA json): one :class:`Sample` per record × question kind × prompt kind.

    Record fields: ``id``, ``image`` (path relative to the image folder), ``general_question``,
    ``obj_question``, ``super_question``, ``answer`` (a count), ``bboxes`` (pixel x1,y1,x2,y2).
    ``path``: a local json file (None: the pinned hub file). Images come from ``image_folder`` (the file
    name is also tried directly under it, and under ``VG_100K``/``VG_100K_2``), or are fetched one by
    one from ``image_url`` (+ the record's image path) into ``cache_dir``. ``limit`` counts records.
    Sample ids are ``{record id}:{question kind}:{prompt kind}``.
    """
    for kind in question_kinds:
        if kind not in QUESTION_FIELDS:
            raise ValueError(f"question kind {kind!r} is not one of {QUESTION_KINDS}")
    for kind in prompt_kinds:
        if kind not in PROMPT_KINDS:
            raise ValueError(f"prompt kind {kind!r} is not one of {PROMPT_KINDS}")
    if image_folder is None and image_url is None:
        raise ValueError("PointQA needs image_folder (local Visual Genome images) or image_url")
    rows = load_rows("pointqa", path, revision)

    def make(row: dict, i: int) -> list[Sample]:
        record_id = str(row.get("id") or f"row{i}")
        image_name = text_field(row, "image", record_id)
        boxes = boxes_field(row, "bboxes", record_id)
        count_field(row, "answer", record_id)
        for kind in question_kinds:
            text_field(row, QUESTION_FIELDS[kind], record_id)
        image_path = _pointqa_image(image_name, record_id, image_folder, image_url, cache_dir)
        size = check_image(image_path, record_id)
        check_boxes(boxes, size, record_id, options.box_tolerance)
        return pointqa_samples(row, record_id, image_path, size, boxes, question_kinds, prompt_kinds,
                               options, benchmark)

    return _collect(benchmark, rows, make, on_error, limit)


def _pointqa_image(name: str, record_id: str, folder: str | Path | None, url: str | None,
                   cache_dir: str | Path) -> Path:
    if url is not None:
        return fetch_image(url, name, Path(cache_dir), record_id)
    folder = Path(folder)
    candidates = [folder / name, folder / Path(name).name, folder / "VG_100K" / Path(name).name,
                  folder / "VG_100K_2" / Path(name).name]
    return next((c for c in candidates if c.is_file()), candidates[0])


def pointqa_samples(row: dict, record_id: str, image: Any, size: tuple[int, int], boxes: tuple[Box, ...],
                    question_kinds: Sequence[str], prompt_kinds: Sequence[str], options: PointQAOptions,
                    benchmark: str) -> list[Sample]:
    """The samples of one PointQA record (every requested question kind × prompt kind).

    Raises :class:`FieldError` naming the record and the field for a missing or malformed answer or question.
    """
    count = count_field(row, "answer", record_id)
    choices: tuple[str, ...] = ()
    gold = str(count)
    if options.answer_format == "choice":
        rng = random.Random(f"{options.seed}:{record_id}")
        opts, right = count_options(count, rng, options.options_mode, options.options_spread)
        choices, gold = tuple(opts), LETTERS[right]
    samples = []
    for qkind in question_kinds:
        question = text_field(row, QUESTION_FIELDS[qkind], record_id)
        for pkind in prompt_kinds:
            if options.answer_format == "choice":
                prompt = multiple_choice_prompt(question, choices)
            else:
                box_text = box_in_words(boxes[0], size, options.box_style) if boxes else None
                prompt = pointqa_prompt(question, pkind, options.plain_text, box_text)
            samples.append(Sample(
                id=f"{record_id}:{qkind}:{pkind}", image=image, question=question, answer=gold, prompt=prompt,
                benchmark=benchmark, answer_type="letter" if choices else "count", options=choices,
                boxes=boxes, question_kind=qkind, prompt_kind=pkind,
                meta={"record_id": record_id, "count": count, "image_size": size}))
    return samples


def load_shapes(folder: str | Path = SHAPES_DIR, split: str = "test", **kwargs: Any) -> SampleList:
    """The embedded synthetic PointQA-style set (``data/shapes-pointqa``) through :func:`load_pointqa`."""
    folder = Path(folder)
    path = folder / f"{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; build it with python {folder / 'generate.py'}")
    return load_pointqa(path, folder, benchmark=SHAPES, **kwargs)


def load_scenes_count(folder: str | Path | None = None, **kwargs: Any) -> SampleList:
    """The scenes-v2 counting set (``data/scenes-count``; ViP-LLaVA json) through :func:`load_pointqa`.

    Plain prompts give the box as coordinates (``PointQAOptions(plain_text="coordinates")`` unless
    ``options=`` is passed). ``meta`` adds what ``meta.json`` records (scene, group sizes, image id).
    """
    folder = Path(folder or DATA_DIR / "scenes-count")
    kwargs.setdefault("options", PointQAOptions(plain_text="coordinates"))
    samples = load_pointqa(folder / "test.json", folder, benchmark="scenes-count", **kwargs)
    return _scenes_meta(samples, folder, "scenes-count")


def load_scenes_pope(folder: str | Path | None = None, *, category: str | None = "adversarial",
                     **kwargs: Any) -> SampleList:
    """The scenes-v2 POPE set (``data/scenes-pope``, lmms-lab POPE columns) through :func:`load_pope`;
    ``category``: random, popular, adversarial (default, as :func:`load_pope`) or None for all three."""
    folder = Path(folder or DATA_DIR / "scenes-pope")
    samples = load_pope(folder / "test.json", category=category, image_folder=folder, **kwargs)
    return _scenes_meta(samples, folder, "scenes-pope")


def load_scenes_choice(folder: str | Path | None = None, **kwargs: Any) -> SampleList:
    """The scenes-v2 multiple-choice set (``data/scenes-choice``, MMBench columns) through :func:`load_mmbench`."""
    folder = Path(folder or DATA_DIR / "scenes-choice")
    samples = load_mmbench(folder / "test.json", image_folder=folder, **kwargs)
    return _scenes_meta(samples, folder, "scenes-choice")


def _scenes_meta(samples: SampleList, folder: Path, benchmark: str) -> SampleList:
    """Samples of a ``data/scenes-*`` set with what its ``meta.json`` adds to the benchmark's own columns:
    the benchmark name, the sample id, ``meta`` (task fields and the scene of the image), and the box of
    a visual prompt (``records[row id]``: ``{"id"?, "meta", "boxes"?}``; ``scenes[image id]``)."""
    extra = json.loads((folder / "meta.json").read_text())
    for s in samples:
        row = extra["records"][s.meta.get("record_id", s.id)]
        s.benchmark, s.id = benchmark, row.get("id", s.id)
        s.meta.update(row["meta"], **extra["scenes"][row["meta"]["image_id"]])
        if row.get("boxes"):
            s.boxes, s.prompt_kind = tuple(tuple(float(v) for v in b) for b in row["boxes"]), "visual"
    return samples


def load_pope(data_files: str | Path | Sequence[str | Path] | None = None, *, category: str | None = "adversarial",
              image_folder: str | Path | None = None, limit: int | None = None, on_error: OnError = "raise",
              revision: str | None = None) -> SampleList:
    """POPE yes/no questions (default: the COCO adversarial split).

    Schemas: lmms-lab (``question_id``, ``question``, ``answer``, ``image``, ``category``) or the original
    jsonl (``question_id``, ``image`` file name, ``text``, ``label``; ``category`` filter not applied when
    the column is missing: point ``data_files`` at ``coco_pope_adversarial.json``).
    """
    rows = load_rows("pope", data_files, revision)
    if category is not None and "category" in rows.column_names:
        rows = rows.filter(lambda c: c == category, input_columns="category")
        if len(rows) == 0:
            raise EmptySplitError(f"pope: no rows with category {category!r}")

    def make(row: dict, i: int) -> list[Sample]:
        sid = _row_id(row, i)
        question = text_field(row, "question" if "question" in row else "text", sid)
        answer = normalise_yes_no(str(_present_field(row, ("answer", "label"), sid)))
        if answer is None:
            raise DataError(f"sample {sid}: gold answer {row.get('answer') or row.get('label')!r} is not yes/no")
        return [Sample(id=sid, image=_row_image(row, "image", sid, image_folder), question=question,
                       answer=answer, prompt=pope_prompt(question), benchmark="pope", answer_type="yes_no",
                       meta={"category": row.get("category", category)})]

    return _collect("pope", rows, make, on_error, limit)


def load_mmbench(data_files: str | Path | Sequence[str | Path] | None = None, *, limit: int | None = None,
                 on_error: OnError = "raise", revision: str | None = None,
                 image_folder: str | Path | None = None) -> SampleList:
    """MMBench dev-en: ``index``, ``question``, ``hint`` (not used, as in the paper), ``A``–``D``, ``answer``, ``image``
    (an image, or a file name under ``image_folder``)."""
    rows = load_rows("mmbench", data_files, revision)

    def make(row: dict, i: int) -> list[Sample]:
        sid = _row_id(row, i)
        options = _present(row.get(letter) for letter in "ABCD")
        question, gold = text_field(row, "question", sid), text_field(row, "answer", sid).strip()
        return [_choice_sample(sid, row, question, options, gold, "mmbench",
                               multiple_choice_prompt(question, options), image_folder,
                               {"category": row.get("category")})]

    return _collect("mmbench", rows, make, on_error, limit)


def load_seed(data_files: str | Path | Sequence[str | Path] | None = None, *, limit: int | None = None,
              on_error: OnError = "raise", revision: str | None = None) -> SampleList:
    """SEED-Bench, image questions only: ``question_id``, ``question``, ``choice_a``–``choice_d``, ``answer``,
    ``data_type`` (rows other than ``"image"`` dropped), ``image`` (an image or a list; the first is used)."""
    rows = load_rows("seed", data_files, revision)
    if "data_type" in rows.column_names:
        rows = rows.filter(lambda t: t == "image", input_columns="data_type")
        if len(rows) == 0:
            raise EmptySplitError("seed: no rows with data_type 'image'")

    def make(row: dict, i: int) -> list[Sample]:
        sid = _row_id(row, i)
        options = _present(row.get(f"choice_{c}") for c in "abcd")
        question, gold = text_field(row, "question", sid), text_field(row, "answer", sid).strip()
        return [_choice_sample(sid, row, question, options, gold, "seed",
                               multiple_choice_prompt(question, options), None,
                               {"question_type_id": row.get("question_type_id")})]

    return _collect("seed", rows, make, on_error, limit)


def load_qbench(data_files: str | Path | Sequence[str | Path] | None = None, *,
                image_folder: str | Path | None = None, limit: int | None = None, on_error: OnError = "raise",
                revision: str | None = None) -> SampleList:
    """Q-Bench LLVisionQA (dev). Two schemas: the hub's (``id``, ``image``, ``question``, ``option0``–``option3``,
    ``correct_choice`` as a letter, an index or the option text) and the original json (``img_path`` under
    ``image_folder``, ``question``, ``candidates``, ``correct_ans`` as the option text)."""
    rows = load_rows("qbench", data_files, revision)

    def make(row: dict, i: int) -> list[Sample]:
        sid = _row_id(row, i)
        if "candidates" in row:
            if not isinstance(row["candidates"], (list, tuple)):
                raise FieldError(f"sample {sid}: field 'candidates' is {row['candidates']!r}, not a list of options. "
                                 + SKIP_ADVICE)
            options, correct, image_key = _present(row["candidates"]), \
                _present_field(row, ("correct_ans",), sid), "img_path"
        else:
            options, correct, image_key = _present(row.get(f"option{k}") for k in range(4)), \
                _present_field(row, ("correct_choice",), sid), "image"
        gold = _gold_letter(correct, options, sid)
        question = text_field(row, "question", sid)
        return [_choice_sample(sid, row, question, options, gold, "qbench",
                               qbench_prompt(question, options), image_folder, {}, image_key)]

    return _collect("qbench", rows, make, on_error, limit)


def _gold_letter(correct: Any, options: Sequence[str], sid: str) -> str:
    text = str(correct).strip()
    if len(text) == 1 and text in LETTERS[:len(options)]:
        return text
    if text.isdigit() and int(text) < len(options):
        return LETTERS[int(text)]
    if text in options:
        return LETTERS[options.index(text)]
    raise DataError(f"sample {sid}: correct answer {correct!r} matches none of the options {list(options)}")


def _choice_sample(sid: str, row: dict, question: str, options: list[str], gold: str, benchmark: str,
                   prompt: str, image_folder: str | Path | None, meta: dict,
                   image_key: str = "image") -> Sample:
    if len(options) < 2:
        raise DataError(f"sample {sid}: {len(options)} option(s); a multiple-choice question needs two or more")
    if gold not in LETTERS[:len(options)]:
        raise DataError(f"sample {sid}: gold letter {gold!r} is not one of the {len(options)} options")
    image = _row_image(row, image_key, sid, Path(image_folder) if image_folder else None)
    return Sample(id=sid, image=image, question=question, answer=gold, prompt=prompt, benchmark=benchmark,
                  answer_type="letter", options=tuple(options), meta=meta)


def model_inputs(samples: Sequence[Sample], spec: Any) -> tuple[list[Image.Image], list[str]]:
    """What a processor takes for a batch: the images the model sees (boxes drawn for visual prompts) and
    the full prompt texts (``spec.format_prompt``, the model's chat template, around each user prompt).

    ``spec``: a :class:`helpers.models.ModelSpec` (e.g. ``models.spec_of(model)``). Use as
    ``processor(images=images, text=texts, padding=True, return_tensors="pt")``.
    """
    return [s.model_image() for s in samples], [spec.format_prompt(s.prompt) for s in samples]


LOADERS: dict[str, Callable[..., SampleList]] = {
    "pointqa": load_pointqa, SHAPES: load_shapes, "pope": load_pope, "mmbench": load_mmbench,
    "seed": load_seed, "qbench": load_qbench, "scenes-count": load_scenes_count, "scenes-pope": load_scenes_pope,
    "scenes-choice": load_scenes_choice,
}


def load(benchmark: str, *args: Any, **kwargs: Any) -> SampleList:
    """Dispatch to the loader of ``benchmark`` (a key of :data:`LOADERS`)."""
    if benchmark not in LOADERS:
        raise KeyError(f"unknown benchmark {benchmark!r}; known: {sorted(LOADERS)}")
    return LOADERS[benchmark](*args, **kwargs)
