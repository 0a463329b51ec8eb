"""Procedural colour fundus photographs: the built-in data for the demo and the tests.

No data set can be downloaded here, so qhybrid draws its own retinas. They are synthetic and
labelled as such; they are meant to have the anatomy a fundus model must learn (field of view,
optic disc with cup, macula and fovea, a branching vessel tree with arteries and veins, diabetic
retinopathy lesions by grade), not to stand in for clinical data.

Geometry follows a right eye (OD) seen by the camera: the optic disc is on the nasal side (image
right), the fovea about 2.5 disc diameters temporal to it; left eyes (OS) are mirrored. Everything
is drawn at twice the output size (vessels at eight times, on a PIL canvas) and reduced with an
area filter, so thin vessels stay anti-aliased at 32 px.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MIN_SIZE, MAX_SIZE = 32, 256
GRADES = (0, 1, 2, 3, 4)
#: Default grade mix (roughly the skew of screening data sets: most images are grade 0).
DEFAULT_GRADE_PROBS = (0.45, 0.15, 0.2, 0.1, 0.1)


@dataclass(frozen=True)
class FundusLabels:
    """Labels of one image. ``eye`` is ``"right"`` (OD) or ``"left"`` (OS)."""

    grade: int
    eye: str
    gradable: bool = True
    source: str = "synthetic"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Anatomy:
    """Where things are, in normalised coordinates (x right, y down, FOV radius ~0.92)."""

    eye: str
    fovea: tuple[float, float]
    disc: tuple[float, float]
    disc_radius: float
    cup_ratio: float
    fov_radius: float
    vessels: tuple = ()  # (points, widths, is_artery) per vessel, right-eye frame
    lesion_counts: dict | None = None


class SyntheticFundus:
    """Deterministic synthetic fundus images: ``gen[i]`` depends only on ``(seed, i)``.

    Args:
        size: output size in pixels (square), 32 to 256.
        seed: data-set seed.
        grade: fix every image's DR grade (0-4); ``None`` draws it from ``grade_probs``.
        lesions: set to ``False`` to draw healthy-looking retinas whatever the grade.
        grain: set to ``False`` for the same images without the sensor grain (the last step of
            the rendering): what a perfect denoising autoencoder could give back at best.
    """

    def __init__(self, size: int = 64, seed: int = 0, grade: int | None = None,
                 lesions: bool = True, grade_probs=DEFAULT_GRADE_PROBS, grain: bool = True):
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise ValueError(f"SyntheticFundus size must be an integer, got {size!r}")
        if not MIN_SIZE <= size <= MAX_SIZE:
            raise ValueError(f"SyntheticFundus size must be between {MIN_SIZE} and {MAX_SIZE} px, got {size}")
        if grade is not None and grade not in GRADES:
            raise ValueError(f"SyntheticFundus grade must be one of 0-4, got {grade!r}")
        probs = np.asarray(grade_probs, dtype=float)
        if probs.shape != (5,) or np.any(probs < 0) or probs.sum() <= 0:
            raise ValueError("SyntheticFundus grade_probs must be 5 non-negative weights")
        self.size = int(size)
        self.seed = int(seed)
        self.grade = grade
        self.lesions = lesions
        self.grain = bool(grain)
        self.grade_probs = probs / probs.sum()

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(index), 0x51F])

    def render(self, index: int) -> tuple[np.ndarray, FundusLabels, Anatomy]:
        """Image, labels and the anatomy it was drawn from (positions, vessels, lesion counts)."""
        rng = self.rng(index)
        grade = int(self.grade if self.grade is not None else rng.choice(5, p=self.grade_probs))
        eye = "right" if rng.random() < 0.5 else "left"
        image, anatomy = render_fundus(self.size, rng, grade if self.lesions else 0, eye, grain=self.grain)
        return image, FundusLabels(grade=grade, eye=eye), anatomy

    def __getitem__(self, index: int) -> tuple[np.ndarray, FundusLabels]:
        image, labels, _ = self.render(index)
        return image, labels

    def sample(self, n: int, start: int = 0) -> tuple[np.ndarray, list[FundusLabels]]:
        """``n`` images as a (n, size, size, 3) uint8 array, and their labels."""
        images = np.empty((n, self.size, self.size, 3), dtype=np.uint8)
        labels = []
        for k in range(n):
            images[k], lab = self[start + k]
            labels.append(lab)
        return images, labels


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------
def render_fundus(size: int, rng: np.random.Generator, grade: int = 0, eye: str = "right",
                  structure: bool = True, grain: bool = True):
    """Draw one fundus photograph; returns ``(uint8 image (size, size, 3), Anatomy)``.

    ``structure=False`` leaves out disc, vessels and lesions (an ungradable, featureless retina,
    used to train the gradability validator). ``grain=False`` leaves out the sensor grain; the
    grain is drawn all the same, so the random stream, and with it every other image, is unchanged.
    """
    res = 2 * size  # internal resolution
    anatomy = _sample_anatomy(rng, eye)
    x, y = _grid(res)
    # work in the right-eye frame; mirror at the end for left eyes
    rgb = _background(x, y, anatomy, rng)
    vessels = []
    if structure:
        rgb = _optic_disc(rgb, x, y, anatomy, rng)
        vessels = _vessel_tree(anatomy, rng, grade)
        rgb = _draw_vessels(rgb, vessels, res, rng)
    counts = {"microaneurysms": 0, "haemorrhages": 0, "hard_exudates": 0, "cotton_wool_spots": 0}
    if grade > 0 and structure:
        rgb = _lesions(rgb, x, y, anatomy, vessels, grade, rng, counts)
    rgb = _camera(rgb, x, y, anatomy, rng)
    image = Image.fromarray(np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8))
    image = image.resize((size, size), Image.Resampling.BOX)
    out = np.asarray(image)
    noise = rng.normal(0, rng.uniform(1.0, 2.5), out.shape) * grain
    out = np.clip(out + noise * (out.max(axis=2, keepdims=True) > 8), 0, 255).astype(np.uint8)
    if eye == "left":
        out = out[:, ::-1].copy()
    anatomy = replace(anatomy, vessels=tuple((v.points, v.widths, v.artery) for v in vessels),
                      lesion_counts=counts)
    return out, anatomy


def vessel_mask(anatomy: Anatomy, size: int) -> np.ndarray:
    """The ground-truth vessel map of an image drawn by :func:`render_fundus`: a boolean
    (size, size) array, True where a vessel covers at least half of a pixel (mirrored like the
    image for left eyes). What vessel measurements are checked against."""
    scale = 8
    canvas = size * scale
    layer = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(layer)
    for points, widths, _ in anatomy.vessels:
        for p0, p1, wpx in _vessel_segments(points, widths, canvas):
            _stroke(draw, p0, p1, wpx)
    coverage = np.asarray(layer.resize((size, size), Image.Resampling.BOX), dtype=float) / 255.0
    mask = coverage >= 0.5
    return mask[:, ::-1].copy() if anatomy.eye == "left" else mask


def _grid(res: int):
    coords = (np.arange(res) + 0.5) / res * 2 - 1
    return np.meshgrid(coords, coords)  # x[i, j] = column, y[i, j] = row


def _sample_anatomy(rng, eye) -> Anatomy:
    disc_radius = rng.uniform(0.11, 0.14)
    dd = 2 * disc_radius
    fovea = (rng.uniform(-0.2, -0.08), rng.uniform(-0.03, 0.07))
    distance = rng.uniform(2.2, 2.5) * dd
    disc = (fovea[0] + distance, fovea[1] - rng.uniform(0.15, 0.4) * disc_radius)
    return Anatomy(eye=eye, fovea=fovea, disc=disc, disc_radius=disc_radius,
                   cup_ratio=rng.uniform(0.25, 0.5), fov_radius=rng.uniform(0.90, 0.95))


def _smooth_noise(rng, res: int, cells: int) -> np.ndarray:
    """Smooth random field in [-1, 1]: a coarse random grid upsampled bicubically."""
    coarse = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((res, res), Image.Resampling.BICUBIC), float)
    return field / 127.5 - 1


def _background(x, y, a: Anatomy, rng) -> np.ndarray:
    res = x.shape[0]
    # pigmentation: light orange to dark red-brown retinas
    p = rng.beta(2, 2)
    base = np.array([0.80, 0.38, 0.17]) * (1 - p) + np.array([0.62, 0.22, 0.09]) * p
    base = base * rng.uniform(0.92, 1.08, 3)
    # illumination: brightest near the centre (shifted a little), falling off to the rim
    cx, cy = rng.uniform(-0.15, 0.15, 2)
    r = np.hypot(x - cx, y - cy) / a.fov_radius
    falloff = rng.uniform(0.45, 0.7)
    light = 1 - falloff * np.clip(r, 0, 1.3) ** rng.uniform(2.0, 3.0)
    # choroidal texture: low-frequency mottling, a little stronger in lightly pigmented eyes
    texture = 0.05 * _smooth_noise(rng, res, 7) + 0.025 * _smooth_noise(rng, res, 19)
    texture *= 1.0 + 0.8 * (1 - p)
    rgb = base[None, None, :] * (light * (1 + texture))[..., None]
    # glow around the disc (light scattered by the bright disc and the nerve fibre layer)
    d_disc = np.hypot(x - a.disc[0], y - a.disc[1])
    glow = np.exp(-((d_disc / (3.0 * a.disc_radius)) ** 2))
    rgb *= 1 + 0.18 * glow[..., None] * np.array([1.0, 1.2, 1.2])
    # macula: darker, browner, with a small darker fovea and sometimes a light reflex
    dd = 2 * a.disc_radius
    d_fov = np.hypot(x - a.fovea[0], y - a.fovea[1])
    macula = np.exp(-((d_fov / (0.75 * dd)) ** 2))
    fovea = np.exp(-((d_fov / (0.17 * dd)) ** 2))
    depth = rng.uniform(0.25, 0.4)
    rgb *= 1 - (depth * macula + 0.15 * fovea)[..., None] * np.array([0.9, 1.25, 1.2])
    if rng.random() < 0.5:
        reflex = np.exp(-((d_fov / (0.03 * dd)) ** 2))
        rgb += 0.12 * reflex[..., None]
    return rgb


def _optic_disc(rgb, x, y, a: Anatomy, rng) -> np.ndarray:
    rd = a.disc_radius
    ex, ey = rd * rng.uniform(0.92, 1.0), rd * rng.uniform(1.05, 1.15)  # slightly tall oval
    d = np.hypot((x - a.disc[0]) / ex, (y - a.disc[1]) / ey)
    edge = 1 / (1 + np.exp((d - 1) / 0.06))  # soft disc margin
    disc_colour = np.array([0.98, 0.74, 0.48]) * rng.uniform(0.93, 1.05, 3)
    # neuroretinal rim pinker than the centre, nasal rim a little darker
    rim = np.clip(1 - d, 0, 1)
    colour = disc_colour[None, None, :] * (0.88 + 0.12 * rim[..., None])
    rgb = rgb * (1 - edge[..., None]) + colour * edge[..., None]
    # cup: pale, offset temporally (towards the fovea, i.e. -x in the right-eye frame)
    c = a.cup_ratio
    cx = a.disc[0] - 0.18 * rd
    dc = np.hypot((x - cx) / (c * ex), (y - a.disc[1]) / (c * ey * 1.08))
    cup = 1 / (1 + np.exp((dc - 1) / 0.12))
    cup_colour = np.array([1.0, 0.93, 0.78])
    rgb = rgb * (1 - 0.85 * cup[..., None]) + cup_colour * 0.85 * cup[..., None]
    # peripapillary pigment crescent in some eyes (temporal side)
    if rng.random() < 0.35:
        crescent = np.exp(-(((d - 1.08) / 0.07) ** 2)) * (x < a.disc[0] - 0.3 * rd)
        rgb *= 1 - 0.25 * crescent[..., None]
    return rgb


# --- vessels ----------------------------------------------------------------------------------
@dataclass
class _Vessel:
    points: list[tuple[float, float]]
    widths: list[float]
    artery: bool


def _vessel_tree(a: Anatomy, rng, grade: int) -> list[_Vessel]:
    """Arcades above and below the macula plus nasal vessels, arteries and veins in pairs."""
    vessels: list[_Vessel] = []
    dd = 2 * a.disc_radius
    dx, dy = a.disc
    for side in (-1, 1):  # -1: superior (up), +1: inferior
        for artery in (True, False):
            width = (0.016 if artery else 0.023) * rng.uniform(0.9, 1.1)
            # temporal arcade: leaves the disc vertically, then arches over the macula
            start = (dx + rng.uniform(-0.2, 0.2) * a.disc_radius + (0.03 if artery else -0.03),
                     dy + side * 0.2 * a.disc_radius)
            heading = math.atan2(side, -0.15 + rng.uniform(-0.15, 0.15))
            ax = (dx - a.fovea[0]) * rng.uniform(0.95, 1.1)
            by = rng.uniform(1.5, 1.9) * dd * (1.0 if artery else rng.uniform(0.9, 1.1))
            centre = (dx - ax, a.fovea[1])
            _grow(vessels, start, heading, width, artery, a, rng, depth=0,
                  length=rng.uniform(1.3, 1.6), arcade=(side, centre, ax, by))
            # nasal vessel: towards image right, up or down
            heading = math.atan2(side * rng.uniform(0.5, 1.2), 1.0)
            _grow(vessels, start, heading, width * rng.uniform(0.7, 0.8), artery, a, rng,
                  depth=1, length=rng.uniform(0.6, 0.9))
    # small vessels running from the disc to the macula (papillomacular bundle)
    for _ in range(rng.integers(2, 5)):
        heading = math.pi + rng.uniform(-0.5, 0.5)
        _grow(vessels, (dx - 0.5 * a.disc_radius, dy + rng.uniform(-0.5, 0.5) * a.disc_radius),
              heading, rng.uniform(0.004, 0.006), bool(rng.random() < 0.5), a, rng, depth=3,
              length=rng.uniform(0.2, 0.35))
    if grade == 4:  # neovascularisation: fine tortuous loops at the disc or along an arcade
        for _ in range(rng.integers(1, 3)):
            angle = rng.uniform(0, 2 * math.pi)
            cx, cy = dx + math.cos(angle) * a.disc_radius, dy + math.sin(angle) * a.disc_radius
            for _ in range(rng.integers(4, 8)):
                _grow(vessels, (cx, cy), rng.uniform(0, 2 * math.pi), 0.0035, True, a, rng,
                      depth=4, length=rng.uniform(0.08, 0.18), tortuous=True)
    return vessels


def _grow(vessels, start, heading, width, artery, a: Anatomy, rng, depth, length,
          arcade=None, tortuous=False) -> None:
    """Grow one vessel as a smooth random walk, tapering and spawning thinner branches."""
    step = 0.012
    x, y = start
    points, widths = [(x, y)], [width]
    travelled = 0.0
    next_branch = rng.uniform(0.12, 0.25)
    branch_side = 1 if rng.random() < 0.5 else -1
    curvature = 0.0
    fx, fy = a.fovea
    dd = 2 * a.disc_radius
    arcade_end = rng.uniform(2.0, 2.4)
    fan_out = None
    while travelled < length and width > 0.0018:
        if arcade is not None:
            # pure pursuit of an ellipse through the disc that arches over the macula
            side, (ox, oy), ax, by = arcade
            phi = math.atan2((y - oy) * side / by, (x - ox) / ax)
            if phi > arcade_end:  # past the macula: fan out temporally, away from the midline
                fan_out = math.atan2(side * 0.7, -1.0)
                arcade = None
                continue
            tx = ox + ax * math.cos(phi + 0.25)
            ty = oy + side * by * math.sin(phi + 0.25)
            desired = math.atan2(ty - y, tx - x)
            diff = (desired - heading + math.pi) % (2 * math.pi) - math.pi
            heading += 0.3 * diff
        if fan_out is not None:
            heading += 0.12 * ((fan_out - heading + math.pi) % (2 * math.pi) - math.pi)
        wiggle = 0.35 if tortuous else (0.03 if depth == 0 else 0.06)
        curvature = 0.8 * curvature + rng.normal(0, wiggle)
        heading += curvature * (2.5 if tortuous else 1.0) * step / 0.012
        # keep out of the foveal avascular zone
        if math.hypot(x - fx, y - fy) < 0.45 * dd and depth > 0:
            away = math.atan2(y - fy, x - fx)
            diff = (away - heading + math.pi) % (2 * math.pi) - math.pi
            heading += 0.5 * diff
        x += step * math.cos(heading)
        y += step * math.sin(heading)
        travelled += step
        width *= 1 - (0.003 if depth == 0 else 0.008) * (1 + 0.5 * tortuous)
        points.append((x, y))
        widths.append(width)
        if math.hypot(x, y) > a.fov_radius + 0.05:
            break
        if depth < 3 and not tortuous and travelled >= next_branch:
            next_branch = travelled + rng.uniform(0.15, 0.3) * (1 + depth)
            child_width = width * rng.uniform(0.5, 0.7)
            angle = heading + branch_side * rng.uniform(0.45, 1.0)
            branch_side = -branch_side
            _grow(vessels, (x, y), angle, child_width, artery, a, rng, depth + 1,
                  length=rng.uniform(0.25, 0.6) / (1 + 0.3 * depth))
            width *= rng.uniform(0.88, 0.95)  # the parent thins after giving off a branch
    vessels.append(_Vessel(points, widths, artery))


def _vessel_segments(points, widths, canvas: int):
    """A vessel's segments on a canvas of ``canvas`` pixels: (start, end, width in pixels)."""
    pts = [((p[0] + 1) / 2 * canvas, (p[1] + 1) / 2 * canvas) for p in points]
    for p0, p1, w in zip(pts[:-1], pts[1:], widths[1:]):
        yield p0, p1, max(1.0, w / 2 * canvas)


def _stroke(draw, p0, p1, wpx: float) -> None:
    """One segment with a round joint at its end."""
    draw.line([p0, p1], fill=255, width=int(round(wpx)))
    r = wpx / 2
    draw.ellipse([p1[0] - r, p1[1] - r, p1[0] + r, p1[1] + r], fill=255)


def _draw_vessels(rgb, vessels: list[_Vessel], res: int, rng) -> np.ndarray:
    """Rasterise vessels on supersampled canvases (veins, arteries, arterial reflex)."""
    scale = 4
    canvas = res * scale
    layers = {name: Image.new("L", (canvas, canvas), 0) for name in ("vein", "artery", "reflex")}
    draws = {name: ImageDraw.Draw(img) for name, img in layers.items()}

    for vessel in vessels:
        name = "artery" if vessel.artery else "vein"
        for p0, p1, wpx in _vessel_segments(vessel.points, vessel.widths, canvas):
            _stroke(draws[name], p0, p1, wpx)
            if vessel.artery and wpx > 6:
                draws["reflex"].line([p0, p1], fill=255, width=max(1, int(round(wpx * 0.25))))
    masks = {}
    for name, img in layers.items():
        small = img.resize((res, res), Image.Resampling.BOX).filter(ImageFilter.GaussianBlur(0.6))
        masks[name] = np.asarray(small, dtype=float)[..., None] / 255.0
    vein_tint = np.array([0.50, 0.28, 0.34]) * rng.uniform(0.9, 1.1)
    artery_tint = np.array([0.78, 0.50, 0.55]) * rng.uniform(0.95, 1.05)
    rgb = rgb * (1 - masks["vein"] * (1 - vein_tint))
    rgb = rgb * (1 - masks["artery"] * (1 - artery_tint))
    rgb = rgb + 0.06 * masks["reflex"]
    return rgb


# --- lesions -----------------------------------------------------------------------------------
def _posterior_pole_points(n, a: Anatomy, rng, spread=2.6):
    """Random points, denser around the macula, inside the field of view."""
    dd = 2 * a.disc_radius
    pts = []
    while len(pts) < n:
        r = abs(rng.normal(0, spread * dd * 0.6))
        t = rng.uniform(0, 2 * math.pi)
        x, y = a.fovea[0] + r * math.cos(t) * 1.2, a.fovea[1] + r * math.sin(t)
        if math.hypot(x, y) < a.fov_radius - 0.05 and math.hypot(x - a.disc[0], y - a.disc[1]) > 1.3 * a.disc_radius:
            pts.append((x, y))
    return pts


def _blob(x, y, cx, cy, radius, rng, lobes=3, sharp=False):
    """An irregular blob: a few overlapping Gaussians (hard-edged for exudates)."""
    field = np.zeros_like(x)
    for _ in range(lobes):
        ox, oy = rng.normal(0, radius * 0.5, 2)
        rx, ry = radius * rng.uniform(0.6, 1.1, 2)
        field = np.maximum(field, np.exp(-(((x - cx - ox) / rx) ** 2 + ((y - cy - oy) / ry) ** 2)))
    if sharp:
        field = np.clip((field - 0.35) / 0.25, 0, 1)
    return field


def _lesions(rgb, x, y, a: Anatomy, vessels, grade: int, rng, counts: dict) -> np.ndarray:
    ranges = {  # (microaneurysms, haemorrhages, hard exudates, cotton-wool spots) ranges per grade
        1: ((2, 7), (0, 1), (0, 1), (0, 1)),
        2: ((6, 16), (3, 9), (2, 14), (0, 2)),
        3: ((14, 30), (10, 24), (8, 30), (2, 5)),
        4: ((12, 26), (8, 20), (6, 26), (1, 4)),
    }[grade]
    n_ma, n_h, n_ex, n_cws = (int(rng.integers(lo, hi + 1)) for lo, hi in ranges)
    counts.update(microaneurysms=n_ma, haemorrhages=n_h, hard_exudates=n_ex, cotton_wool_spots=n_cws)
    # a local window around each lesion keeps this cheap
    res = x.shape[0]

    def paint(cx, cy, radius, colour, strength, rng, lobes=3, sharp=False, mode="mul"):
        half = radius * 3
        j0 = max(0, int(((cx - half) + 1) / 2 * res))
        j1 = min(res, int(((cx + half) + 1) / 2 * res) + 2)
        i0 = max(0, int(((cy - half) + 1) / 2 * res))
        i1 = min(res, int(((cy + half) + 1) / 2 * res) + 2)
        if j1 <= j0 or i1 <= i0:
            return
        field = _blob(x[i0:i1, j0:j1], y[i0:i1, j0:j1], cx, cy, radius, rng, lobes, sharp)
        patch = rgb[i0:i1, j0:j1]
        f = (field * strength)[..., None]
        if mode == "mul":
            rgb[i0:i1, j0:j1] = patch * (1 - f * (1 - np.asarray(colour)))
        else:
            rgb[i0:i1, j0:j1] = patch * (1 - f) + np.asarray(colour) * f

    for cx, cy in _posterior_pole_points(n_ma, a, rng):
        paint(cx, cy, rng.uniform(0.006, 0.01), [0.45, 0.15, 0.15], 0.9, rng, lobes=1)
    for cx, cy in _posterior_pole_points(n_h, a, rng, spread=3.5):
        paint(cx, cy, rng.uniform(0.012, 0.032), [0.42, 0.12, 0.1], rng.uniform(0.7, 0.95), rng,
              lobes=int(rng.integers(2, 5)))
    # hard exudates come in clusters, often in rings (circinate) around leaking microaneurysms
    remaining = n_ex
    while remaining > 0:
        (cx, cy), = _posterior_pole_points(1, a, rng, spread=1.8)
        k = int(min(remaining, rng.integers(3, 10)))
        ring = rng.uniform(0.02, 0.06)
        for _ in range(k):
            t = rng.uniform(0, 2 * math.pi)
            r = ring * rng.uniform(0.6, 1.2) if rng.random() < 0.6 else rng.uniform(0, ring)
            paint(cx + r * math.cos(t), cy + r * math.sin(t), rng.uniform(0.004, 0.011),
                  [1.0, 0.9, 0.5], rng.uniform(0.75, 0.95), rng, lobes=2, sharp=True, mode="mix")
        remaining -= k
    # cotton-wool spots: soft, pale, along the arcades
    arcade_points = [p for v in vessels[:8] for p in v.points[10:60:7]]
    for _ in range(n_cws):
        if not arcade_points:
            break
        cx, cy = arcade_points[rng.integers(len(arcade_points))]
        cx, cy = cx + rng.normal(0, 0.03), cy + rng.normal(0, 0.03)
        if math.hypot(cx, cy) < a.fov_radius - 0.06:
            paint(cx, cy, rng.uniform(0.025, 0.05), [0.93, 0.88, 0.8], rng.uniform(0.45, 0.7), rng,
                  lobes=int(rng.integers(2, 4)), mode="mix")
    return rgb


# --- camera ------------------------------------------------------------------------------------
def _camera(rgb, x, y, a: Anatomy, rng) -> np.ndarray:
    """Optics and sensor: soft focus, white balance and gamma jitter, the circular aperture."""
    image = Image.fromarray(np.clip(rgb * 255, 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.6) * x.shape[0] / 128))
    rgb = np.asarray(image, dtype=float) / 255
    rgb = rgb * rng.uniform(0.95, 1.05, 3)
    rgb = np.clip(rgb, 0, 1) ** rng.uniform(0.9, 1.1)
    r = np.hypot(x, y)
    aperture = np.clip((a.fov_radius - r) / 0.012, 0, 1)
    rim = 1 - 0.35 * np.clip((r - (a.fov_radius - 0.08)) / 0.08, 0, 1)  # darkening at the rim
    return rgb * (aperture * rim)[..., None]


def write_folder(out: str | Path, n: int, size: int = 64, seed: int = 0, grade: int | None = None,
                 progress: bool = True) -> Path:
    """Draw ``n`` synthetic fundus images into ``out`` as PNGs plus ``labels.csv`` (file, grade, eye,
    gradable, source): an image folder that :func:`qhybrid.data.loaders.load_dataset` reads back."""
    import csv
    import io as _io

    from tqdm import tqdm

    from qhybrid import io

    gen = SyntheticFundus(size=size, seed=seed, grade=grade)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(n), desc="draw synthetic fundus images", unit="img", disable=not progress):
        image, labels = gen[i]
        name = f"fundus_{i:05d}.png"
        buffer = _io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        io.write_bytes(out / name, buffer.getvalue())
        rows.append({"file": name, "grade": labels.grade, "eye": labels.eye,
                     "gradable": labels.gradable, "source": labels.source})
    text = _io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(out / "labels.csv", text.getvalue())
    return out
