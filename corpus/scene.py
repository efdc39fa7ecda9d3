"""Procedural scenes for the synthetic corpus: shapes, colours, backgrounds and actions, drawn
with NumPy. Kept apart from captioning and file writing (``indexer/synth.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CANVAS = 96  # pixels, square
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 30),
    "green": (40, 190, 60),
    "cyan": (40, 210, 225),
    "blue": (50, 80, 235),
    "purple": (160, 60, 210),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "heart", "cross", "diamond")
SIZES = {"small": 8.0, "large": 14.0}  # radius in pixels
BACKGROUNDS = ("black", "gray", "navy", "brown", "gradient", "noisy")
ACTIONS = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "grow",
    "shrink",
    "appear",
    "disappear",
    "rotate",
    "bounce",
    "blink",
    "still",
)
# Pairs a single averaged frame cannot tell apart.
MIRRORED = {
    "move_left": "move_right",
    "move_right": "move_left",
    "move_up": "move_down",
    "move_down": "move_up",
    "grow": "shrink",
    "shrink": "grow",
    "appear": "disappear",
    "disappear": "appear",
}
_TRAVEL = 26.0  # pixels a moving shape travels during its action


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str
    size: str
    x: float
    y: float


@dataclass(frozen=True)
class Step:
    """``thing`` (index into the scene's things) performs ``action`` from frame ``start`` to
    ``end`` (exclusive)."""

    thing: int
    action: str
    start: int
    end: int


def _shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Boolean mask of ``shape`` centred at 0 with radius ``r``, rotated by ``angle``."""
    c, s = np.cos(angle), np.sin(angle)
    x, y = (c * xx + s * yy) / r, (-s * xx + c * yy) / r
    rho, phi = np.hypot(x, y), np.arctan2(y, x)
    if shape == "circle":
        return rho <= 1
    if shape == "square":
        return np.maximum(abs(x), abs(y)) <= 0.8
    if shape == "diamond":
        return abs(x) + abs(y) <= 1.05
    if shape == "cross":
        return ((abs(x) <= 0.33) & (abs(y) <= 1)) | ((abs(y) <= 0.33) & (abs(x) <= 1))
    if shape == "hexagon":
        return np.maximum(abs(y) * 1.1547, (abs(y) * 0.57735 + abs(x))) <= 0.95
    if shape == "triangle":  # pointing up (image y grows downwards)
        return (y <= 0.6) & (y >= -1 + 1.732 * abs(x) * 1.1)
    if shape == "star":
        return rho <= 0.45 + 0.55 * np.clip(np.cos(5 * (phi + np.pi / 2)), 0, 1) ** 2
    if shape == "heart":
        hx, hy = x * 1.15, -y * 1.15 + 0.25
        return (hx**2 + hy**2 - 1) ** 3 - hx**2 * hy**3 <= 0
    raise ValueError(f"unknown shape {shape}")


def _background(kind: str, rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((CANVAS, CANVAS, 3), dtype=np.float32)
    base = {
        "black": (10, 10, 12),
        "gray": (70, 70, 72),
        "navy": (15, 20, 70),
        "brown": (70, 45, 25),
        "gradient": (20, 20, 20),
        "noisy": (45, 45, 45),
    }[kind]
    img[:] = base
    if kind == "gradient":
        img += np.linspace(0, 70, CANVAS, dtype=np.float32)[:, None, None]
    if kind == "noisy":
        img += rng.normal(0, 12, size=(CANVAS, CANVAS, 1)).astype(np.float32)
    return img


def _pose(action: str, p: float, frame: int) -> tuple[float, float, float, float, float]:
    """(dx, dy, scale, angle, alpha) of a shape doing ``action`` at progress p in [0, 1]."""
    d = _TRAVEL * p
    match action:
        case "move_left":
            return -d, 0, 1, 0, 1
        case "move_right":
            return d, 0, 1, 0, 1
        case "move_up":
            return 0, -d, 1, 0, 1
        case "move_down":
            return 0, d, 1, 0, 1
        case "grow":
            return 0, 0, 0.55 + 0.9 * p, 0, 1
        case "shrink":
            return 0, 0, 1.45 - 0.9 * p, 0, 1
        case "appear":
            return 0, 0, 1, 0, min(1.0, 1.5 * p)
        case "disappear":
            return 0, 0, 1, 0, max(0.0, 1 - 1.5 * p)
        case "rotate":
            return 0, 0, 1, p * np.pi * 0.9, 1
        case "bounce":
            return 0, -abs(np.sin(2 * np.pi * p)) * 16, 1, 0, 1
        case "blink":
            return 0, 0, 1, 0, float(frame % 4 < 2)
        case "still":
            return 0, 0, 1, 0, 1
    raise ValueError(f"unknown action {action}")


def _state_at(things: list[Thing], steps: list[Step], frame: int) -> list[tuple]:
    """Per thing, its pose at ``frame``: the effects of its finished steps add up (a shape that
    moved left, then grows, grows where it arrived); before its first step it holds that
    step's starting pose (a shape about to appear is not there yet)."""
    poses = []
    for i in range(len(things)):
        dx, dy, scale, angle, alpha = 0.0, 0.0, 1.0, 0.0, 1.0
        for n, step in enumerate(s for s in steps if s.thing == i):
            if frame < step.start:
                if n == 0:
                    alpha = _pose(step.action, 0.0, frame)[4]
                break
            done = frame >= step.end
            p = 1.0 if done else (frame - step.start) / max(1, step.end - step.start - 1)
            sdx, sdy, sscale, sangle, salpha = _pose(step.action, p, frame)
            dx, dy, scale, angle = dx + sdx, dy + sdy, scale * sscale, angle + sangle
            alpha = 1.0 if done and step.action == "blink" else salpha
            if not done:
                break
        poses.append((dx, dy, scale, angle, alpha))
    return poses


def render(
    things: list[Thing], steps: list[Step], background: str, frames: int, rng: np.random.Generator
) -> np.ndarray:
    """The scene as uint8 RGB frames (frames, CANVAS, CANVAS, 3)."""
    bg = _background(background, rng)
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS].astype(np.float32)
    out = np.empty((frames, CANVAS, CANVAS, 3), dtype=np.uint8)
    for t in range(frames):
        img = bg.copy()
        for thing, (dx, dy, scale, angle, alpha) in zip(
            things, _state_at(things, steps, t), strict=True
        ):
            if alpha <= 0:
                continue
            mask = _shape_mask(
                thing.shape,
                xx - (thing.x + dx),
                yy - (thing.y + dy),
                SIZES[thing.size] * scale,
                angle,
            )
            colour = np.asarray(COLOURS[thing.colour], dtype=np.float32)
            img[mask] = (1 - alpha) * img[mask] + alpha * colour
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def place(sizes: list[str], actions: list[list[str]], rng: np.random.Generator) -> list[tuple]:
    """Centres for shapes that stay inside the canvas whatever their actions, apart from each
    other where possible."""
    margin = 4.0
    centres: list[tuple[float, float]] = []
    for size, acts in zip(sizes, actions, strict=True):
        r = SIZES[size] * (1.45 if {"grow", "shrink"} & set(acts) else 1.0)
        lo_x = r + margin + (_TRAVEL if "move_left" in acts else 0)
        hi_x = CANVAS - r - margin - (_TRAVEL if "move_right" in acts else 0)
        lo_y = r + margin + (_TRAVEL if "move_up" in acts else 0) + (16 if "bounce" in acts else 0)
        hi_y = CANVAS - r - margin - (_TRAVEL if "move_down" in acts else 0)
        best, best_gap = (0.0, 0.0), -1.0
        for _ in range(30):
            c = (
                float(rng.uniform(lo_x, max(lo_x, hi_x))),
                float(rng.uniform(lo_y, max(lo_y, hi_y))),
            )
            gap = min((np.hypot(c[0] - o[0], c[1] - o[1]) for o in centres), default=1e9)
            if gap > best_gap:
                best, best_gap = c, gap
            if gap > 2.2 * r + 6:
                break
        centres.append(best)
    return centres


@dataclass(frozen=True)
class SynthVideo:
    """One planned video: its things, their actions over time, background, split and seed."""

    id: str
    things: list[Thing]
    steps: list[Step]
    background: str
    split: str
    seed: int
