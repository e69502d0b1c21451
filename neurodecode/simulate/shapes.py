"""Procedurally generated object images for the simulator.

A *concept* is a combination of three attributes: a shape (the object's outline), a colour (its hue)
and a texture (the pattern on its surface). An *exemplar* of a concept varies in size, position,
pose (rotation), a small colour jitter and the phase of its texture, so two exemplars of one concept
look alike but are never identical, and concepts that share attributes look partly alike, the way
real object categories do.

Rendering is pure NumPy: every pixel is mapped into the object's own frame (undoing translation,
rotation and scale), an implicit function decides whether it lies inside the shape, and the texture
is a function of the object-frame coordinates. Images are rendered at 3x resolution and averaged
down for anti-aliasing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "hexagon", "crescent", "diamond",
          "heart", "arrow", "ellipse")
# name -> hue in degrees (saturation/value fixed per colour); grey has no hue
COLOURS = {
    "red": (0.0, 0.85, 0.9), "orange": (30.0, 0.9, 0.95), "yellow": (55.0, 0.85, 0.95),
    "green": (120.0, 0.7, 0.7), "cyan": (180.0, 0.7, 0.85), "blue": (225.0, 0.8, 0.85),
    "purple": (275.0, 0.6, 0.75), "pink": (325.0, 0.45, 0.95), "brown": (25.0, 0.65, 0.45),
    "grey": (0.0, 0.0, 0.6),
}
TEXTURES = ("solid", "stripes", "checker", "dots", "gradient", "rings")


@dataclass(frozen=True)
class Concept:
    """A concept: one shape, one colour, one texture."""

    shape: str
    colour: str
    texture: str

    @property
    def name(self) -> str:
        """``colour_texture_shape``, e.g. ``red_stripes_star``."""
        return f"{self.colour}_{self.texture}_{self.shape}"


@dataclass(frozen=True)
class Exemplar:
    """How one image of a concept is drawn."""

    scale: float  # object radius as a fraction of half the image width
    x: float  # centre, in [-1, 1] image coordinates
    y: float
    angle: float  # rotation in radians
    hue_jitter: float  # degrees
    texture_phase: float  # in [0, 1)
    background: float  # background grey level in [0, 1]

    def to_dict(self) -> dict[str, float]:
        """Parameters as a dict."""
        return {k: float(v) for k, v in asdict(self).items()}


def all_concepts() -> list[Concept]:
    """Every shape x colour x texture combination (720 concepts), in a fixed order."""
    return [Concept(s, c, t) for s in SHAPES for c in COLOURS for t in TEXTURES]


def sample_exemplar(rng: np.random.Generator) -> Exemplar:
    """Draw exemplar parameters: size, position, pose, colour jitter, texture phase, background."""
    scale = rng.uniform(0.42, 0.78)
    lim = 0.95 - scale
    return Exemplar(
        scale=scale, x=rng.uniform(-lim, lim), y=rng.uniform(-lim, lim), angle=rng.uniform(-np.pi, np.pi),
        hue_jitter=rng.normal(0.0, 6.0), texture_phase=rng.uniform(0.0, 1.0), background=rng.uniform(0.35, 0.6),
    )


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in the object frame (the object spans roughly the unit disc)."""
    r = np.hypot(u, v)
    th = np.arctan2(v, u)
    if shape == "circle":
        return r <= 1.0
    if shape == "ellipse":
        return (u / 1.0) ** 2 + (v / 0.55) ** 2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "diamond":
        return np.abs(u) / 0.75 + np.abs(v) <= 1.0
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if shape == "hexagon":
        k = np.pi / 3
        a = np.mod(th, k) - k / 2
        return r * np.cos(a) <= 0.87
    if shape == "triangle":
        # equilateral, pointing up: three half-planes
        out = np.ones_like(u, dtype=bool)
        for ang in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            out &= (u * np.cos(ang) + v * np.sin(ang)) >= -0.5
        return out
    if shape == "star":
        rr = 0.45 + 0.55 * (0.5 + 0.5 * np.cos(5 * th)) ** 1.5
        return r <= rr
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if shape == "crescent":
        return (r <= 1.0) & (np.hypot(u - 0.45, v) >= 0.8)
    if shape == "heart":
        x, y = u * 1.15, v * 1.15 + 0.15
        return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0
    if shape == "arrow":
        shaft = (np.abs(v) <= 0.22) & (u >= -0.95) & (u <= 0.2)
        head = (u >= 0.2) & (u <= 0.95) & (np.abs(v) <= (0.95 - u) * 0.9)
        return shaft | head
    raise ValueError(f"Unknown shape {shape!r}; allowed: {SHAPES}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Brightness modulation in [0, 1] as a function of object-frame coordinates."""
    if texture == "solid":
        return np.ones_like(u)
    if texture == "stripes":
        return 0.5 + 0.5 * (np.sin(2 * np.pi * (3.0 * u + phase)) > 0)
    if texture == "checker":
        return 0.45 + 0.55 * ((np.floor(2.5 * u + phase) + np.floor(2.5 * v + phase)) % 2)
    if texture == "dots":
        cu = np.mod(2.5 * u + phase, 1.0) - 0.5
        cv = np.mod(2.5 * v + phase, 1.0) - 0.5
        return np.where(np.hypot(cu, cv) < 0.28, 0.35, 1.0)
    if texture == "gradient":
        return 0.35 + 0.65 * np.clip((u + 1) / 2, 0, 1)
    if texture == "rings":
        return 0.5 + 0.5 * (np.sin(2 * np.pi * (2.5 * np.hypot(u, v) + phase)) > 0)
    raise ValueError(f"Unknown texture {texture!r}; allowed: {TEXTURES}")


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb((h % 360.0) / 360.0, s, v))


def render(concept: Concept, exemplar: Exemplar, size: int = 64, *, supersample: int = 2) -> np.ndarray:
    """Draw one image.

    Parameters
    ----------
    concept : Concept
        Shape, colour and texture.
    exemplar : Exemplar
        Size, position, pose and jitter.
    size : int
        Width and height in pixels (at least 16).
    supersample : int
        Anti-aliasing factor.

    Returns
    -------
    image : ndarray, uint8, shape (size, size, 3)
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    n = size * supersample
    coords = (np.arange(n) + 0.5) / n * 2 - 1
    X, Y = np.meshgrid(coords, -coords)  # y up
    # to object frame: translate, rotate by -angle, scale
    dx, dy = X - exemplar.x, Y - exemplar.y
    c, s = np.cos(-exemplar.angle), np.sin(-exemplar.angle)
    u = (c * dx - s * dy) / exemplar.scale
    v = (s * dx + c * dy) / exemplar.scale
    mask = _shape_mask(concept.shape, u, v)
    tex = _texture(concept.texture, u, v, exemplar.texture_phase)
    h, sat, val = COLOURS[concept.colour]
    rgb = _hsv_to_rgb(h + exemplar.hue_jitter, sat, val)
    obj = tex[..., None] * rgb[None, None, :]
    # faint background texture so that images are not trivially flat
    bg = exemplar.background + 0.04 * np.sin(2 * np.pi * (X * 1.5 + Y * 0.7))
    img = np.where(mask[..., None], obj, bg[..., None])
    img = img.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def low_level_features(image: np.ndarray, background: float | None = None) -> np.ndarray:
    """Image-computable low-level features (what early visual cortex is sensitive to).

    Returns 10 numbers: mean R, G, B; luminance contrast (sd); object area (fraction of pixels
    differing from the background); object centroid x and y; orientation energy (cos 2theta,
    sin 2theta of the second-moment ellipse, scaled by its elongation); and the share of
    high-spatial-frequency power.
    """
    img = image.astype(np.float64) / 255.0
    lum = img @ np.array([0.299, 0.587, 0.114])
    n = lum.shape[0]
    if background is None:
        background = float(np.median(np.concatenate([lum[0], lum[-1], lum[:, 0], lum[:, -1]])))
    obj = np.abs(lum - background) > 0.06
    sat = img.max(-1) - img.min(-1)
    obj |= sat > 0.15
    area = obj.mean()
    coords = (np.arange(n) + 0.5) / n * 2 - 1
    X, Y = np.meshgrid(coords, -coords)
    w = obj.astype(np.float64)
    tot = max(w.sum(), 1.0)
    cx, cy = (w * X).sum() / tot, (w * Y).sum() / tot
    mxx = (w * (X - cx) ** 2).sum() / tot
    myy = (w * (Y - cy) ** 2).sum() / tot
    mxy = (w * (X - cx) * (Y - cy)).sum() / tot
    theta = 0.5 * np.arctan2(2 * mxy, mxx - myy)
    elong = np.hypot(mxx - myy, 2 * mxy) / max(mxx + myy, 1e-9)
    spec = np.abs(np.fft.fft2(lum - lum.mean())) ** 2
    f = np.fft.fftfreq(n)
    fr = np.hypot(*np.meshgrid(f, f))
    hf = spec[fr > 0.15].sum() / max(spec.sum(), 1e-12)
    return np.array([img[..., 0].mean(), img[..., 1].mean(), img[..., 2].mean(), lum.std(), area, cx, cy,
                     elong * np.cos(2 * theta), elong * np.sin(2 * theta), hf])


LOW_LEVEL_NAMES = ("mean_r", "mean_g", "mean_b", "contrast", "area", "centroid_x", "centroid_y",
                   "orientation_cos", "orientation_sin", "high_freq")
