"""Memory environments for world models: grid worlds seen through small top-down image views.

Built here after the four families of environments of "Facing Off World Model Backbones: RNNs,
Transformers, and S4" (Deng, Park and Ahn, 2023, arXiv 2307.02064), which tailors each family to
one memory capability of a world model. The paper's environments were not released; these are
small, seeded, fast re-creations of the same ideas for CPU budgets, not copies:

- :class:`MultiRoom` — **long-term imagination**: rooms whose floor colours are drawn per episode;
  a scripted agent first tours every room (the context), then keeps revisiting them. Imagining the
  revisits needs the colours seen long before (``n_rooms`` 2 / 4 / 10 after the paper's Two Rooms,
  Four Rooms, Ten Rooms).
- :class:`Teleport` — **context-dependent recall**: as ``MultiRoom``, plus a teleport action that
  puts the agent back at its start; the view there must be recalled from the first steps.
- :class:`MultiDoorsKeys` — **reward prediction**: coloured keys in a first room, coloured doors
  along a corridor; passing a door whose key the agent picked up earlier gives reward 1. The held
  keys are never shown, so the reward is predictable only from memory.
- :class:`DistractingMemory` — **memory-based reasoning**: two cue tiles at the start, a corridor
  of cells whose colours flicker at random every step (distractors), then a room whose floor colour
  is a function of the two cues (``palette[(a + b) mod n]``): predicting it means remembering both
  cues through the noise and combining them.

Common to all: a grid of cells, a non-rotating (allocentric) square view of ``view x view`` cells
centred on the agent, rendered at ``cell_px`` pixels per cell (default 7 x 7 cells of 4 px: 28 x 28
RGB ``uint8``, the size of minigrid's default agent view at tile size 4; minigrid's own renderer
measured about 6 ms per step here, far too slow to collect thousands of episodes on a CPU, so
rendering is a crop of a per-cell colour map). Outside the grid reads as wall. The agent is drawn
as a white cell with a one-pixel border of the floor colour under it. Actions: 0 up, 1 down,
2 left, 3 right (``Teleport`` adds 4 = teleport); moving into a wall leaves the agent in place.
Episodes have a fixed length (``max_steps``; the end is a time limit, so ``truncated``).

Every environment has :meth:`GridMemoryEnv.scripted_action`, the exploration policy used to
collect data (seeded by ``reset(seed=...)``, independent of the environment's own randomness), and
reports its phase in ``info["phase"]`` (``"context"`` or ``"query"``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = [
    "GridMemoryEnv",
    "MultiRoom",
    "Teleport",
    "MultiDoorsKeys",
    "DistractingMemory",
    "WORLD_MODEL_ENVS",
    "make_world_model_env",
]

# Distinct, saturated colours for floors, keys, doors and cues (index = colour id).
PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [170, 110, 40],
        [0, 128, 128],
    ],
    dtype=np.uint8,
)
WALL_RGB = np.array([90, 90, 90], dtype=np.uint8)
AGENT_RGB = np.array([255, 255, 255], dtype=np.uint8)
CORRIDOR_RGB = np.array([30, 30, 30], dtype=np.uint8)

WALL, FLOOR = 1, 0
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])  # up, down, left, right (row, col)


class GridMemoryEnv(gym.Env):
    """Base of the memory grid worlds (see the module docstring).

    Subclasses build the layout in :meth:`_build` (``self.walls [H, W]`` bool, ``self.colors
    [H, W, 3]`` uint8, ``self.agent`` ``(row, col)``), may react to moves in :meth:`_on_enter` and
    define :meth:`_waypoints` (targets of the scripted explorer).

    Args:
        view: side of the square view in cells (odd).
        cell_px: pixels per cell.
        max_steps: episode length.
        context_steps: steps of the context phase (the explorer's tour; ``info["phase"]``).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"]}
    n_actions = 4

    def __init__(
        self, view: int = 7, cell_px: int = 4, max_steps: int = 300, context_steps: int = 100
    ):
        super().__init__()
        if view < 3 or view % 2 == 0:
            raise ValueError(f"{type(self).__name__}: view must be an odd int >= 3, got {view}")
        if cell_px < 1:
            raise ValueError(f"{type(self).__name__}: cell_px must be >= 1, got {cell_px}")
        if not 0 < context_steps <= max_steps:
            raise ValueError(
                f"{type(self).__name__}: need 0 < context_steps <= max_steps, got "
                f"{context_steps} and {max_steps}"
            )
        self.view, self.cell_px = view, cell_px
        self.max_steps, self.context_steps = max_steps, context_steps
        side = view * cell_px
        self.observation_space = spaces.Box(0, 255, (side, side, 3), dtype=np.uint8)
        self.action_space = spaces.Discrete(self.n_actions)
        self.render_mode = "rgb_array"

    # --- to be defined by the families ----------------------------------------------------
    def _build(self) -> None:
        raise NotImplementedError

    def _on_enter(self) -> float:
        """Called after every step; returns the reward of the step."""
        return 0.0

    def _waypoints(self) -> list[tuple[int, int]]:
        """Targets the scripted explorer walks to, in order (refilled when exhausted)."""
        raise NotImplementedError

    def _refresh(self) -> None:
        """Per-step changes of the colour map (distractors)."""

    # --- gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # The explorer has its own generator so that the policy does not change the world.
        self._policy_rng = np.random.default_rng(self.np_random.integers(2**63))
        self._t = 0
        self._build()
        self.start = tuple(self.agent)
        self._plan: deque[tuple[int, int]] = deque()
        self._targets: deque[tuple[int, int]] = deque()
        self._refresh()
        return self._observe(), self._info()

    def step(self, action):
        action = int(action)
        if not 0 <= action < self.n_actions:
            raise ValueError(
                f"{type(self).__name__}: action must be in [0, {self.n_actions}), got {action}"
            )
        self._move(action)
        self._t += 1
        reward = self._on_enter()
        self._refresh()
        truncated = self._t >= self.max_steps
        return self._observe(), float(reward), False, truncated, self._info()

    def _move(self, action: int) -> None:
        target = (self.agent[0] + MOVES[action][0], self.agent[1] + MOVES[action][1])
        if not self.walls[target]:
            self.agent = target

    def _info(self) -> dict[str, Any]:
        return {"phase": "context" if self._t < self.context_steps else "query", "t": self._t}

    def _observe(self) -> np.ndarray:
        v, half = self.view, self.view // 2
        h, w = self.walls.shape
        cells = np.empty((v, v, 3), dtype=np.uint8)
        cells[:] = WALL_RGB
        r0, c0 = self.agent[0] - half, self.agent[1] - half
        rs, re = max(r0, 0), min(r0 + v, h)
        cs, ce = max(c0, 0), min(c0 + v, w)
        cells[rs - r0 : re - r0, cs - c0 : ce - c0] = self.colors[rs:re, cs:ce]
        image = np.repeat(np.repeat(cells, self.cell_px, 0), self.cell_px, 1)
        p = self.cell_px
        lo, hi = half * p, (half + 1) * p
        inset = 1 if p >= 3 else 0
        image[lo + inset : hi - inset, lo + inset : hi - inset] = AGENT_RGB
        return image

    def render(self) -> np.ndarray:
        return self._observe()

    # --- the scripted explorer -------------------------------------------------------------
    def _path(self, goal: tuple[int, int]) -> list[tuple[int, int]]:
        """Shortest path (BFS over free cells) from the agent to ``goal``, without the start."""
        start = tuple(self.agent)
        if start == goal:
            return []
        parent = {start: None}
        queue = deque([start])
        while queue:
            cell = queue.popleft()
            if cell == goal:
                break
            for dr, dc in MOVES:
                nxt = (cell[0] + dr, cell[1] + dc)
                if nxt not in parent and not self.walls[nxt]:
                    parent[nxt] = cell
                    queue.append(nxt)
        if goal not in parent:
            return []
        path = []
        cell = goal
        while cell != start:
            path.append(cell)
            cell = parent[cell]
        return path[::-1]

    def scripted_action(self) -> int:
        """The explorer's next action: walk shortest paths to the family's waypoints."""
        for _ in range(8):
            if not self._plan:
                if not self._targets:
                    self._targets.extend(self._waypoints())
                self._plan.extend(self._path(self._targets.popleft()))
            if self._plan:
                nxt = self._plan.popleft()
                delta = (nxt[0] - self.agent[0], nxt[1] - self.agent[1])
                for a, (dr, dc) in enumerate(MOVES):
                    if (dr, dc) == delta:
                        return a
        return int(self._policy_rng.integers(4))

    def _random_cell(self, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[int, int]:
        while True:
            cell = (
                int(self._policy_rng.integers(rows[0], rows[1])),
                int(self._policy_rng.integers(cols[0], cols[1])),
            )
            if not self.walls[cell]:
                return cell


class MultiRoom(GridMemoryEnv):
    """Rooms in a grid, floor colours drawn per episode (long-term imagination).

    ``n_rooms`` rooms of ``room_size x room_size`` free cells are laid out in ``rows`` rows
    (``n_rooms = 2`` -> 1 x 2, 4 -> 2 x 2, 10 -> 2 x 5), with one-cell doorways in the middle of
    every wall shared by two neighbours. Each room gets a distinct floor colour drawn at reset
    (so it can only be known from having seen it). The explorer visits one random cell of every
    room in a random order (the tour, which should fit in ``context_steps``), then random cells of
    random rooms.

    Args:
        n_rooms: number of rooms (at most the palette size, 10).
        room_size: free cells per room side.
        **kwargs: see :class:`GridMemoryEnv`.
    """

    def __init__(self, n_rooms: int = 4, room_size: int = 5, **kwargs):
        super().__init__(**kwargs)
        if not 1 <= n_rooms <= len(PALETTE):
            raise ValueError(f"MultiRoom: n_rooms must be in [1, {len(PALETTE)}], got {n_rooms}")
        if room_size < 2:
            raise ValueError(f"MultiRoom: room_size must be >= 2, got {room_size}")
        self.n_rooms, self.room_size = n_rooms, room_size
        self.rows = 1 if n_rooms <= 3 else 2
        self.cols = -(-n_rooms // self.rows)

    def _room_box(self, k: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((r0, r1), (c0, c1))`` half-open free-cell ranges of room ``k``."""
        s = self.room_size
        r, c = divmod(k, self.cols)
        return (1 + r * (s + 1), 1 + r * (s + 1) + s), (1 + c * (s + 1), 1 + c * (s + 1) + s)

    def _build(self) -> None:
        s = self.room_size
        h, w = self.rows * (s + 1) + 1, self.cols * (s + 1) + 1
        self.walls = np.ones((h, w), dtype=bool)
        self.colors = np.empty((h, w, 3), dtype=np.uint8)
        self.colors[:] = WALL_RGB
        self.room_colors = self.np_random.permutation(len(PALETTE))[: self.n_rooms]
        for k in range(self.n_rooms):
            (r0, r1), (c0, c1) = self._room_box(k)
            self.walls[r0:r1, c0:c1] = False
            self.colors[r0:r1, c0:c1] = PALETTE[self.room_colors[k]]
        mid = s // 2
        for k in range(self.n_rooms):
            (r0, r1), (c0, c1) = self._room_box(k)
            r, c = divmod(k, self.cols)
            if c + 1 < self.cols and k + 1 < self.n_rooms:  # doorway to the right neighbour
                self.walls[r0 + mid, c1] = False
                self.colors[r0 + mid, c1] = CORRIDOR_RGB
            if r + 1 < self.rows and k + self.cols < self.n_rooms:  # doorway below
                self.walls[r1, c0 + mid] = False
                self.colors[r1, c0 + mid] = CORRIDOR_RGB
        (r0, r1), (c0, c1) = self._room_box(int(self.np_random.integers(self.n_rooms)))
        self.agent = (int(self.np_random.integers(r0, r1)), int(self.np_random.integers(c0, c1)))
        self._toured = False

    def _waypoints(self) -> list[tuple[int, int]]:
        rooms = list(self._policy_rng.permutation(self.n_rooms))
        if self._toured:
            rooms = rooms[:1]
        self._toured = True
        return [self._random_cell(*self._room_box(int(k))) for k in rooms]


class Teleport(MultiRoom):
    """``MultiRoom`` with a teleport action back to the start cell (context-dependent recall).

    Action 4 puts the agent back on the cell where the episode started. The explorer tours the
    rooms, then teleports once at step ``teleport_at`` (default: ``context_steps``) and explores
    on: the first view after the teleport must be recalled from the very first steps.

    Args:
        teleport_at: step at which the explorer teleports.
        **kwargs: see :class:`MultiRoom`.
    """

    n_actions = 5

    def __init__(self, teleport_at: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.teleport_at = self.context_steps if teleport_at is None else teleport_at

    def _move(self, action: int) -> None:
        if action == 4:
            self.agent = self.start
        else:
            super()._move(action)

    def scripted_action(self) -> int:
        if self._t == self.teleport_at:
            self._plan.clear()
            self._targets.clear()
            return 4
        return super().scripted_action()


class MultiDoorsKeys(GridMemoryEnv):
    """Keys in a room, doors along a corridor, reward for opening a door (reward prediction).

    A ``room_size`` square room holds ``n_keys`` keys of distinct colours; to its right a corridor
    (one cell high, ``corridor_len`` long) has ``n_doors`` doors, each of a random key colour.
    Stepping on a key picks it up (it disappears; held keys are not shown). Stepping on a closed
    door whose key is held opens it: reward 1, and the door is drawn darker from then on. Doors
    are passable closed or open (so the explorer never gets stuck); only opening pays. The
    explorer picks each key with probability 1/2, walks to the end of the corridor, then wanders
    between random cells.

    Args:
        n_keys: keys (distinct colours, at most 10).
        n_doors: doors along the corridor.
        room_size: side of the key room.
        corridor_len: length of the corridor.
        **kwargs: see :class:`GridMemoryEnv`.
    """

    def __init__(
        self,
        n_keys: int = 3,
        n_doors: int = 4,
        room_size: int = 5,
        corridor_len: int = 24,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 1 <= n_keys <= min(len(PALETTE), room_size * room_size - 1):
            raise ValueError(f"MultiDoorsKeys: n_keys must be in [1, 10], got {n_keys}")
        if not 1 <= n_doors < corridor_len:
            raise ValueError(
                f"MultiDoorsKeys: need 1 <= n_doors < corridor_len, got {n_doors}, {corridor_len}"
            )
        self.n_keys, self.n_doors = n_keys, n_doors
        self.room_size, self.corridor_len = room_size, corridor_len

    def _build(self) -> None:
        s, length = self.room_size, self.corridor_len
        h, w = s + 2, s + 2 + length + 1
        self.walls = np.ones((h, w), dtype=bool)
        self.colors = np.empty((h, w, 3), dtype=np.uint8)
        self.colors[:] = WALL_RGB
        floor = np.array([200, 200, 200], dtype=np.uint8)
        self.walls[1 : s + 1, 1 : s + 1] = False
        self.colors[1 : s + 1, 1 : s + 1] = floor
        self.row = 1 + s // 2
        self.walls[self.row, s + 1 : s + 1 + length] = False
        self.colors[self.row, s + 1 : s + 1 + length] = CORRIDOR_RGB
        key_colors = self.np_random.permutation(len(PALETTE))[: self.n_keys]
        cells = self.np_random.permutation(s * s)
        self.agent = (1 + int(cells[0]) // s, 1 + int(cells[0]) % s)
        self.keys = {}
        for color, cell in zip(key_colors, cells[1 : 1 + self.n_keys]):
            pos = (1 + int(cell) // s, 1 + int(cell) % s)
            self.keys[pos] = int(color)
            self.colors[pos] = PALETTE[color] // 2 + 64  # keys: lighter than doors
        self.held: set[int] = set()
        cols = np.sort(self.np_random.choice(np.arange(2, length), self.n_doors, replace=False))
        self.doors = {}
        for col in cols:
            pos = (self.row, s + 1 + int(col))
            self.doors[pos] = [int(self.np_random.choice(key_colors)), False]
            self.colors[pos] = PALETTE[self.doors[pos][0]]
        self._phase = 0

    def _on_enter(self) -> float:
        pos = tuple(self.agent)
        if pos in self.keys:
            self.held.add(self.keys.pop(pos))
            self.colors[pos] = np.array([200, 200, 200], dtype=np.uint8)
        door = self.doors.get(pos)
        if door is not None and not door[1] and door[0] in self.held:
            door[1] = True
            self.colors[pos] = PALETTE[door[0]] // 3
            return 1.0
        return 0.0

    def _waypoints(self) -> list[tuple[int, int]]:
        s = self.room_size
        if self._phase == 0:
            self._phase = 1
            chosen = [p for p in self.keys if self._policy_rng.random() < 0.5]
            order = self._policy_rng.permutation(len(chosen))
            return [chosen[i] for i in order] + [(self.row, s + self.corridor_len)]
        return [self._random_cell((1, s + 1), (1, s + 2 + self.corridor_len))]


class DistractingMemory(GridMemoryEnv):
    """Two cues, a flickering corridor, then a room coloured by the cues (memory-based reasoning).

    The start room shows two cue tiles of colours ``a`` and ``b`` (drawn per episode from the
    first ``n_colors`` palette entries). A corridor of ``corridor_len`` cells follows whose cells
    take a random colour at every step (distractors: unpredictable, irrelevant). It leads into a
    goal room whose floor colour is ``palette[(a + b) mod n_colors]``. The explorer walks past
    both cues, through the corridor and then wanders in the goal room.

    Args:
        n_colors: number of cue colours (at most 10).
        room_size: side of the start and goal rooms.
        corridor_len: length of the distractor corridor.
        **kwargs: see :class:`GridMemoryEnv`.
    """

    def __init__(self, n_colors: int = 4, room_size: int = 4, corridor_len: int = 20, **kwargs):
        super().__init__(**kwargs)
        if not 2 <= n_colors <= len(PALETTE):
            raise ValueError(f"DistractingMemory: n_colors must be in [2, 10], got {n_colors}")
        if room_size < 3:
            raise ValueError(f"DistractingMemory: room_size must be >= 3, got {room_size}")
        self.n_colors, self.room_size, self.corridor_len = n_colors, room_size, corridor_len

    def _build(self) -> None:
        s, length = self.room_size, self.corridor_len
        h, w = s + 2, 2 * s + length + 3
        self.walls = np.ones((h, w), dtype=bool)
        self.colors = np.empty((h, w, 3), dtype=np.uint8)
        self.colors[:] = WALL_RGB
        floor = np.array([200, 200, 200], dtype=np.uint8)
        self.walls[1 : s + 1, 1 : s + 1] = False
        self.colors[1 : s + 1, 1 : s + 1] = floor
        self.row = 1 + s // 2
        self.corridor = (s + 1, s + 1 + length)
        self.walls[self.row, self.corridor[0] : self.corridor[1]] = False
        g0 = self.corridor[1]
        self.walls[1 : s + 1, g0 : g0 + s] = False
        self.cues = [int(c) for c in self.np_random.integers(0, self.n_colors, size=2)]
        self.goal_color = (self.cues[0] + self.cues[1]) % self.n_colors
        self.colors[1 : s + 1, g0 : g0 + s] = PALETTE[self.goal_color]
        self.cue_cells = [(1, 1), (s, 1)]
        for cell, cue in zip(self.cue_cells, self.cues):
            self.colors[cell] = PALETTE[cue]
        self.agent = (self.row, 1 + s // 2)
        self._phase = 0

    def _refresh(self) -> None:
        c0, c1 = self.corridor
        picks = self.np_random.integers(0, len(PALETTE), size=c1 - c0)
        self.colors[self.row, c0:c1] = PALETTE[picks]

    def _waypoints(self) -> list[tuple[int, int]]:
        s, g0 = self.room_size, self.corridor[1]
        if self._phase == 0:
            self._phase = 1
            first = [(2, 1), (s - 1, 1)]  # next to each cue
            return first + [self._random_cell((1, s + 1), (g0, g0 + s))]
        return [self._random_cell((1, s + 1), (g0, g0 + s))]


WORLD_MODEL_ENVS = {
    "MultiRoom": MultiRoom,
    "TwoRooms": lambda **kw: MultiRoom(**{"n_rooms": 2, **kw}),
    "FourRooms": lambda **kw: MultiRoom(**{"n_rooms": 4, **kw}),
    "TenRooms": lambda **kw: MultiRoom(**{"n_rooms": 10, **kw}),
    "Teleport": Teleport,
    "MultiDoorsKeys": MultiDoorsKeys,
    "DistractingMemory": DistractingMemory,
}


def make_world_model_env(name: str, **kwargs) -> gym.Env:
    """One memory environment by name (``MultiRoom``, ``TwoRooms``, ``FourRooms``, ``TenRooms``,
    ``Teleport``, ``MultiDoorsKeys``, ``DistractingMemory``), or any gymnasium id whose
    observations are ``uint8`` images ``[H, W, 3]`` (minigrid ids get minigrid's RGB partial view,
    ``agent_view_size`` 7 at tile size 4 unless ``tile_size`` is given)."""
    if name in WORLD_MODEL_ENVS:
        return WORLD_MODEL_ENVS[name](**kwargs)
    if name.startswith("MiniGrid"):
        import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
        from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper

        tile = kwargs.pop("tile_size", 4)
        return ImgObsWrapper(RGBImgPartialObsWrapper(gym.make(name, **kwargs), tile_size=tile))
    if name in gym.registry:
        return gym.make(name, **kwargs)
    raise ValueError(
        f"unknown world-model environment {name!r}; choose one of {sorted(WORLD_MODEL_ENVS)}, a "
        f"MiniGrid id or a registered gymnasium id with image observations"
    )
