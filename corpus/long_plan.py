"""The plan of a long procedural video (``hanet synth --long``): its shots, its segments (events,
still and empty stretches) and where every thing stands, drawn from seeded generators and
nothing rendered; ``corpus.long`` renders the plans and writes the files and the manifest.

A video is a sequence of shots. A shot keeps one background and one set of things (1 to 3);
inside it, events follow each other (one or two actions, 2 to 4 s, captioned as ``hanet synth``
captions its videos) with every thing continuing from where the previous event left it, and
still stretches (nothing moves) may come between them. Between shots there is a hard cut: a new
background (never one that looks alike) and new things. Empty stretches are shots of a bare
background. Still and empty stretches have their own spans and no captions.

Splits mean what they mean in ``hanet synth``: about 8 % of the videos are "compositional", and
every event in them has a held-out (colour, shape, action) triple as its first action; the
others are train / val / test (80 / 10 / 10), where no action and no thing uses a held-out
triple (a thing's (colour, shape, "still") included, as synth counts still things).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from corpus.scene import (
    ACTIONS,
    BACKGROUNDS,
    CANVAS,
    COLOURS,
    SHAPES,
    SIZES,
    Step,
    Thing,
    _pose,
    place,
)
from corpus.synth import FPS, held_out_triples

EVENT_FRAMES = (16, 24, 32)  # 2, 3 or 4 s; two actions take half each
STILL_FRAMES = (16, 160)  # inclusive range: 2 to 20 s
EMPTY_FRAMES = (16, 80)
# A "still" event would look like a still stretch, which has no caption.
EVENT_ACTIONS = tuple(a for a in ACTIONS if a != "still")
# What follows an event; after a still stretch comes an event (or, 1 time in 4, a cut).
_AFTER_EVENT = {"cut": 0.2, "empty": 0.1, "still": 0.3, "event": 0.4}
_MARGIN = 4.0  # pixels, as ``scene.place``
# Background pairs whose cut changes too few pixels to be told from motion (under half of them).
_LOOKALIKE = {frozenset({"gradient", "gray"}), frozenset({"gradient", "noisy"})}


@dataclass(frozen=True)
class Segment:
    """Frames [start, end) of the video, in shot ``shot``: an event (``steps`` in the shot's own
    frames; ``still``: the things visible and not acting) or a "still" or "empty" stretch."""

    kind: str
    start: int
    end: int
    shot: int
    steps: tuple[Step, ...] = ()
    still: tuple[int, ...] = ()


@dataclass(frozen=True)
class Shot:
    """Frames [start, end) of the video: one background, its things (``x, y`` where they start)
    and all their steps in the shot's own frames, rendered as one continuous scene."""

    start: int
    end: int
    background: str
    things: tuple[Thing, ...]
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class LongVideo:
    id: str
    index: int
    split: str
    seed: int
    frames: int
    shots: tuple[Shot, ...]
    segments: tuple[Segment, ...]


@dataclass
class _Pose:
    """Where a thing stands after the steps planned so far (as ``scene._state_at`` adds them)."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    visible: bool = True
    touched: bool = False


def _fits(thing: Thing, pose: _Pose, action: str) -> bool:
    """Whether ``thing``, from ``pose``, stays inside the canvas (``place``'s margin) all
    through ``action``. Grow only from at most its size and shrink from at least it, so the
    scale stays within [0.55, 1.45] as in a single synth video."""
    if (action == "grow" and pose.scale > 1 + 1e-6) or (
        action == "shrink" and pose.scale < 1 - 1e-6
    ):
        return False
    for p in np.linspace(0.0, 1.0, 17):
        dx, dy, scale, _, _ = _pose(action, float(p), 0)
        r = SIZES[thing.size] * pose.scale * scale
        x, y = thing.x + pose.dx + dx, thing.y + pose.dy + dy
        if min(x, y) - r < _MARGIN - 1e-6 or max(x, y) + r > CANVAS - _MARGIN + 1e-6:
            return False
    return True


@dataclass
class _ShotPlan:
    """A shot being planned: events are added at its end, poses follow them."""

    start: int
    background: str
    things: list[Thing]
    poses: list[_Pose] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    frames: int = 0

    def __post_init__(self) -> None:
        self.poses = [_Pose() for _ in self.things]

    def allowed(self, i: int, action: str) -> bool:
        pose, thing = self.poses[i], self.things[i]
        if thing.shape == "circle" and action == "rotate":
            return False  # a rotating circle looks still
        if action == "appear":  # hidden: gone earlier, or since the shot began (first event)
            if pose.visible and (pose.touched or self.frames > 0):
                return False
        elif not pose.visible:
            return False
        return _fits(thing, pose, action)

    def options(self, held: set, rule: str) -> list[tuple[int, str]]:
        """(thing, action) pairs possible now; ``rule`` "held" keeps held-out triples only,
        "plain" none of them, "any" both."""
        out = []
        for i, t in enumerate(self.things):
            for a in EVENT_ACTIONS:
                in_held = (t.colour, t.shape, a) in held
                if (rule == "any" or in_held == (rule == "held")) and self.allowed(i, a):
                    out.append((i, a))
        return out

    def apply(self, i: int, action: str) -> None:
        dx, dy, scale, _, alpha = _pose(action, 1.0, 0)
        pose = self.poses[i]
        pose.dx, pose.dy, pose.scale = pose.dx + dx, pose.dy + dy, pose.scale * scale
        pose.visible, pose.touched = alpha > 0, True

    def event(
        self, rng: np.random.Generator, length: int, held: set, compositional: bool
    ) -> tuple[tuple[Step, ...], tuple[int, ...]] | None:
        """Plan an event of ``length`` frames at the shot's end: its steps and its still things;
        None when the split's rule leaves no first action."""
        first = self.options(held, "held" if compositional else "plain")
        if not first:
            return None
        visible = [k for k, p in enumerate(self.poses) if p.visible]
        i, a = _draw(rng, first)
        self.apply(i, a)
        t0, half = self.frames, length // 2
        steps = (Step(i, a, t0, t0 + length),)
        if rng.random() < 0.5:  # two actions, by the same thing 3 times in 10 (when it can)
            same = len(self.things) == 1 or rng.random() < 0.3
            rest = self.options(held, "any" if compositional else "plain")
            second = [(j, b) for j, b in rest if (j == i) == same and (j, b) != (i, a)]
            if second:
                j, b = _draw(rng, second)
                self.apply(j, b)
                steps = (Step(i, a, t0, t0 + half), Step(j, b, t0 + half, t0 + length))
        self.steps += steps
        self.frames += length
        actors = {s.thing for s in steps}
        return steps, tuple(k for k in visible if k not in actors)

    def close(self, end: int) -> Shot:
        """The finished shot. A thing whose first step comes later holds still until then (a
        leading one-frame "still" step), or ``_state_at`` would show that step's start (a thing
        about to blink would blink from the shot's first frame)."""
        lead = []
        for i in range(len(self.things)):
            own = [s for s in self.steps if s.thing == i]
            if own and own[0].start > 0 and own[0].action != "appear":
                lead.append(Step(i, "still", 0, 1))
        return Shot(self.start, end, self.background, tuple(self.things), tuple(lead + self.steps))


def _draw(rng: np.random.Generator, options: list[tuple[int, str]]) -> tuple[int, str]:
    """An action drawn uniformly among those possible, then a thing that can do it."""
    actions = sorted({a for _, a in options})
    action = actions[int(rng.integers(len(actions)))]
    things = [i for i, a in options if a == action]
    return things[int(rng.integers(len(things)))], action


def _background(rng: np.random.Generator, after: str | None) -> str:
    """A background for a new shot: never the previous one, nor one that looks like it."""
    choices = [b for b in BACKGROUNDS if after is None or frozenset({b, after}) not in _LOOKALIKE]
    return str(rng.choice([b for b in choices if b != after]))


def _things(rng: np.random.Generator, held: set, compositional: bool) -> list[Thing]:
    """1 to 3 things that a caption can tell apart; in a compositional video the first has a
    held-out triple (placed so that it can do its action), in the others no thing has one."""
    held_acts = sorted(t for t in held if t[2] in EVENT_ACTIONS)
    while True:
        looks = [
            (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)), str(rng.choice(list(SIZES))))
            for _ in range(int(rng.integers(1, 4)))
        ]
        forced = None
        if compositional:
            colour, shape, forced = held_acts[int(rng.integers(len(held_acts)))]
            looks[0] = (colour, shape, looks[0][2])
        elif any((c, s, "still") in held for c, s, _ in looks):
            continue
        if len(set(looks)) == len(looks):
            break
    acts = [[forced] if forced and k == 0 else [] for k in range(len(looks))]
    centres = place([lk[2] for lk in looks], acts, rng)
    return [Thing(c, s, z, x, y) for (c, s, z), (x, y) in zip(looks, centres, strict=True)]


class _VideoPlan:
    """A video being planned, segment after segment; shots close at each cut."""

    def __init__(self, rng: np.random.Generator, held: set, compositional: bool) -> None:
        self.rng, self.held, self.compositional = rng, held, compositional
        self.shots: list[Shot] = []
        self.segments: list[Segment] = []
        self.shot: _ShotPlan | None = None
        self.pos = 0

    def _new_shot(self, things: list[Thing], background: str) -> None:
        if self.shot is not None:
            self.shots.append(self.shot.close(self.pos))
        self.shot = _ShotPlan(self.pos, background, things)

    def event(self, length: int) -> bool:
        """Another event in the current shot; False when the split's rule leaves none."""
        planned = self.shot.event(self.rng, length, self.held, self.compositional)
        if planned is None:
            return False
        steps, still = planned
        shot = len(self.shots)
        self.segments.append(Segment("event", self.pos, self.pos + length, shot, steps, still))
        self.pos += length
        return True

    def cut(self, length: int) -> None:
        """A hard cut to a new shot, which begins with an event."""
        background = _background(self.rng, self.shot.background if self.shot else None)
        while True:
            self._new_shot(_things(self.rng, self.held, self.compositional), background)
            if self.event(length):
                return
            self.shot = None  # no event possible with these things: draw others

    def stretch(self, kind: str, length: int) -> None:
        """A still stretch in the current shot, or an empty one (a shot of its own)."""
        if kind == "empty":
            self._new_shot([], _background(self.rng, self.shot.background if self.shot else None))
        self.segments.append(Segment(kind, self.pos, self.pos + length, len(self.shots)))
        self.shot.frames += length
        self.pos += length

    def pad(self, length: int) -> None:
        """The last frames: the stretch before them goes on, or the shot stands still."""
        last = self.segments[-1] if self.segments else None
        if last is not None and last.kind != "event":
            self.segments[-1] = Segment(last.kind, last.start, last.end + length, last.shot)
            self.shot.frames += length
            self.pos += length
        else:
            self.stretch("still" if self.shot else "empty", length)

    def finish(self, video_id: str, index: int, split: str, seed: int) -> LongVideo:
        self._new_shot([], "")  # closes the last shot
        segments = tuple(self.segments)
        return LongVideo(video_id, index, split, seed, self.pos, tuple(self.shots), segments)


def plan_long_video(index: int, seed: int, split: str, frames: int, held: set) -> LongVideo:
    """One video of ``frames`` frames: after each event a cut, an empty stretch, a still
    stretch or another event in the same shot (``_AFTER_EVENT``)."""
    rng = np.random.default_rng([seed, index, 5])
    plan = _VideoPlan(rng, held, split == "compositional")
    move = "cut"
    while plan.pos < frames:
        left = frames - plan.pos
        if move in ("still", "empty"):
            lo, hi = STILL_FRAMES if move == "still" else EMPTY_FRAMES
            plan.stretch(move, min(left, int(rng.integers(lo, hi + 1))))
            move = "cut" if move == "empty" or rng.random() < 0.25 else "event"
            continue
        length = int(rng.choice(EVENT_FRAMES))
        if length > left:
            plan.pad(left)
        elif move == "cut":
            plan.cut(length)
        elif not plan.event(length):
            move = "cut"
            continue
        move = str(rng.choice(list(_AFTER_EVENT), p=list(_AFTER_EVENT.values())))
    return plan.finish(f"long{index:05d}", index, split, seed)


def _split(u: float) -> str:
    """The split of a video that drew ``u``, with ``synth.plan_corpus``'s shares."""
    if u < 0.08:
        return "compositional"
    return "train" if u < 0.08 + 0.92 * 0.8 else "val" if u < 0.08 + 0.92 * 0.9 else "test"


def plan_long_corpus(
    count: int, seed: int, min_minutes: float = 2.0, max_minutes: float = 10.0
) -> list[LongVideo]:
    """The videos of a corpus, each from its own seeded draws (video i is the same whatever
    ``count``), lasting a uniform draw in [min_minutes, max_minutes]."""
    if not 0 < min_minutes <= max_minutes:
        raise ValueError(f"need 0 < min_minutes <= max_minutes, got {min_minutes}, {max_minutes}")
    held = held_out_triples(seed)
    draws = np.random.default_rng([seed, 0]).random(count)
    videos = []
    for i, u in enumerate(draws):
        minutes = np.random.default_rng([seed, i, 6]).uniform(min_minutes, max_minutes)
        frames = max(1, round(float(minutes) * 60 * FPS))
        videos.append(plan_long_video(i, seed, _split(float(u)), frames, held))
    return videos
