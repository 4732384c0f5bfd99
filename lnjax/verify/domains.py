"""Branch-and-bound's open subdomains on the host: one slot per domain in growing arrays, best-first.

A domain is the input box plus fixed phases of some ReLUs: its phases [total] int8 (0 free, 1 active,
−1 inactive), its row bounds [M], the neuron to split next, its free unstable neurons, depth, and
how often it was bounded again unsplit; while it keeps its warm start, also its α and β [M, total]
(float16) in a separate pool, so that dropping a warm start frees its memory for another domain.

Why arrays and not one Python object per domain: on an MLP a batch of 512 domains is bounded in a few
milliseconds, and the per-domain host work around it (a float16 copy of each child's α and β, its
phases, a heap entry; `Bab._absorb`) was 42 % of the loop's time on the 784-256x2 MNIST net (py-spy,
2026-12-05). Here a batch's children are stored with one gather-scatter per array, and the order is
two arrays sorted by bound (bounds and slots; a batch is merged in with `searchsorted` and one
`insert`, equal bounds first-pushed first, the order a heap of (bound, counter) pops in; a Python
heap cost 16 % of the loop there). Slots are reused, so a long run does not grow the
arrays past its largest open set (plus the doubling's slack).

References:
  Wang et al., NeurIPS 2021 (β-CROWN); alpha-beta-CROWN's complete_verifier/batch_branch_and_bound.py
  keeps its domains in sorted lists of objects, read, not copied.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

COMPACT_CHUNK = 256
"""Warm starts moved per step of `OpenDomains.compact_warm` (a copy of that many is the only
temporary: ~50 MB on the 64×64 CNN)."""

DROP_SHARE = 32
"""A push past the warm pool's limit strips at least limit / DROP_SHARE warm starts (`push`): a drop
scans the whole open order (~10 ms at a million open domains, half a batch on the 784-256x2 MLP), so
it is done once per many batches, not at every one (one open 784-256x2 query, 120 s: 2.63 M
subdomains against 1.85 M with a drop at every push past the limit; 2.44 M under a cap it never
reached)."""

PHASES = (1, -1)
"""The children of a split: the ReLU active (pre-activation ≥ 0), then inactive (≤ 0); together they
cover the parent (a test replaces this with a deliberately incomplete pair and sees BaB go wrong)."""


class Domain(NamedTuple):
    """One open subdomain read out of the store (`OpenDomains.domain`): phases [total] int8, α, β
    [M, total] (None: cold, no warm start), row bounds [M], the neuron to split next, free unstable
    neurons, depth, and how often it was bounded again unsplit (a leaf: no free unstable neuron left)."""

    splits: np.ndarray
    alphas: np.ndarray | None
    betas: np.ndarray | None
    row_lower: np.ndarray
    branch: int
    free: int
    depth: int
    rebounds: int = 0


def split_children(
    splits: np.ndarray, branch: np.ndarray, split: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The children of a batch of domains: each domain with `split` set gives one child per phase of
    PHASES on its `branch` neuron (in that order), the others themselves (a leaf bounded again).
    [n, total], [n], [n] bool -> (children [c, total], parent index [c])."""
    counts = np.where(split, len(PHASES), 1)
    parent = np.repeat(np.arange(len(splits)), counts)
    kids = splits[parent].copy()
    starts = np.cumsum(counts) - counts
    for p, phase in enumerate(PHASES):
        rows = starts[split] + p
        kids[rows, branch[split]] = phase
    return kids, parent


def children(splits: np.ndarray, i: int) -> list[np.ndarray]:
    """The children of one domain split on neuron i: its phases with neuron i fixed to each of PHASES."""
    kids, _ = split_children(np.asarray(splits)[None], np.asarray([i]), np.asarray([True]))
    return list(kids)


def record_bytes(total: int, rows: int) -> int:
    """Host bytes an open domain takes in `OpenDomains` without its warm start: phases (int8), row
    bounds (float64), branch / free / depth / re-bounds / pool index (int64) and its place in the
    order (bound and slot)."""
    return total + 8 * rows + 5 * 8 + 16


def warm_bytes(total: int, rows: int) -> int:
    """Host bytes of a warm start: α and β, float16, per row and ReLU."""
    return 2 * 2 * rows * total


def _grow(obj: object, name: str, size: int) -> None:
    """Gives the array attribute `name` of `obj` `size` rows (the first ones kept, as many as fit):
    in place where numpy can (realloc moves large blocks by remapping their pages: 3x faster than a
    copy when a 2 GB pool doubles), else by a copy. numpy refuses in place (ValueError) while
    anything else holds a reference to the array, so a view is never left dangling: the copy is the
    fallback."""
    shape = (size, *getattr(obj, name).shape[1:])
    try:
        getattr(obj, name).resize(shape)  # no other reference here: the attribute and the call's own
    except ValueError:
        old = getattr(obj, name)
        new = np.zeros(shape, old.dtype)
        keep = min(len(old), size)
        new[:keep] = old[:keep]
        setattr(obj, name, new)


class OpenDomains:
    """The open domains of one branch-and-bound run (see the module docstring).

    `push` stores a batch, `pop(n)` takes the n with the lowest bounds (ties: first pushed first) and
    returns their slots; read them (`meta_of`, `pool_of` and `warm_starts`, or `domain`), then
    `release` them. `fit(memory)` keeps the store within a byte cap (the memory cap: `drop_warm`
    strips the warm starts of the domains with the highest bounds, `compact_warm` returns the pool's
    memory); `dropped` counts the warm starts stripped, `compactions` the pool's copies."""

    def __init__(
        self, total: int, rows: int, cold: tuple[np.ndarray, np.ndarray], warm_limit: int | None = None
    ):
        # The warm-start pool doubles up to this many slots (None: always); past it a push strips the
        # warm starts of the highest open domains for its own (`push`): the pool does not grow.
        self.warm_limit = warm_limit
        self.record_bytes, self.warm_bytes = record_bytes(total, rows), warm_bytes(total, rows)
        self.dropped = 0  # warm starts stripped (`drop_warm`), over the store's life
        self.compactions = 0  # copies of the pool (`compact_warm`)
        self.cold = cold  # the root's α and zero β (float16, [M, total]): a cold domain's warm start
        self.splits = np.zeros((0, total), np.int8)
        self.row_lower = np.zeros((0, rows), np.float64)
        self.meta = np.zeros((0, 5), np.int64)  # branch, free, depth, rebounds, warm-pool slot (−1: cold)
        self.alphas = np.zeros((0, rows, total), np.float16)
        self.betas = np.zeros((0, rows, total), np.float16)
        self.free_slots: list[int] = []
        self.free_warm: list[int] = []
        # The open domains best-first: their bounds ascending and their slots, from `head` on.
        self.order_lower = np.zeros(0, np.float64)
        self.order_slot = np.zeros(0, np.int64)
        self.head = 0
        self.warm = 0  # open domains that keep a warm start

    def __len__(self) -> int:
        return len(self.order_slot) - self.head

    def bounds(self) -> list[float]:
        return self.order_lower[self.head :].tolist()

    def _take(self, free: list[int], n: int, arrays: tuple[str, ...], limit: int | None = None) -> np.ndarray:
        """n slots from the `free` stack, growing the named arrays when there are too few (doubling,
        but not past `limit` slots when that is still enough; None: no limit)."""
        if len(free) < n:
            old = len(getattr(self, arrays[0]))
            need = old + n - len(free)
            double = max(2 * old, 16)
            new = max(need, double if limit is None else min(double, limit))
            for name in arrays:
                _grow(self, name, new)
            free.extend(range(new - 1, old - 1, -1))
        out = np.asarray(free[-n:], np.int64)
        del free[-n:]
        return out

    def push(
        self,
        lower: np.ndarray,
        splits: np.ndarray,
        row_lower: np.ndarray,
        branch: np.ndarray,
        free: np.ndarray,
        depth: np.ndarray,
        rebounds: np.ndarray,
        alphas: np.ndarray,
        betas: np.ndarray,
    ) -> None:
        """Stores n domains (every argument has a leading axis n; α and β converted to float16)."""
        n = len(lower)
        if n == 0:
            return
        slots = self._take(self.free_slots, n, ("splits", "row_lower", "meta"))
        short = n - len(self.free_warm)
        if self.warm_limit is not None and short > 0:
            over = len(self.alphas) + short - self.warm_limit
            if over > 0:  # at the limit: the highest open domains give up their warm starts' slots,
                # at least 1/32 of the pool at a time (each drop scans the open domains' order)
                self.drop_warm(max(min(over, short), self.warm_limit // DROP_SHARE))
        warm = self._take(self.free_warm, n, ("alphas", "betas"), self.warm_limit)
        self.splits[slots] = splits
        self.row_lower[slots] = row_lower
        self.meta[slots] = np.stack([branch, free, depth, rebounds, warm], axis=1)
        self.alphas[warm] = alphas
        self.betas[warm] = betas
        self.warm += n
        by = np.argsort(lower, kind="stable")  # equal bounds: in the order pushed
        live = self.order_lower[self.head :]
        at = np.searchsorted(live, lower[by], side="right")  # after the open ones of equal bound
        self.order_lower = np.insert(live, at, lower[by])
        self.order_slot = np.insert(self.order_slot[self.head :], at, slots[by])
        self.head = 0

    def pop(self, n: int) -> np.ndarray:
        """The slots of the (up to) n domains with the lowest bounds, taken out of the order."""
        out = self.order_slot[self.head : self.head + n].copy()
        self.head += len(out)
        return out

    def pool_of(self, slots: np.ndarray) -> np.ndarray:
        """The warm-start pool index of each slot (−1: cold)."""
        return self.meta[slots, 4]

    def warm_starts(self, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[n, M, total] α and β for pool indices (repeats allowed; −1: the cold start), one gather."""
        cold = pool < 0
        if len(self.alphas) == 0:  # nothing pushed yet (the root): all cold
            shape = (len(pool), *self.cold[0].shape)
            return np.broadcast_to(self.cold[0], shape).copy(), np.broadcast_to(self.cold[1], shape).copy()
        alphas, betas = self.alphas[np.maximum(pool, 0)], self.betas[np.maximum(pool, 0)]
        if cold.any():
            alphas[cold], betas[cold] = self.cold
        return alphas, betas

    def meta_of(self, slots: np.ndarray) -> tuple[np.ndarray, ...]:
        """(branch, free, depth, rebounds) of each slot."""
        m = self.meta[slots]
        return m[:, 0], m[:, 1], m[:, 2], m[:, 3]

    def domain(self, slot: int) -> Domain:
        branch, free, depth, rebounds, pool = (int(v) for v in self.meta[slot])
        return Domain(
            splits=self.splits[slot].copy(),
            alphas=None if pool < 0 else self.alphas[pool].copy(),
            betas=None if pool < 0 else self.betas[pool].copy(),
            row_lower=self.row_lower[slot].copy(),
            branch=branch,
            free=free,
            depth=depth,
            rebounds=rebounds,
        )

    def release(self, slots: np.ndarray) -> None:
        """Frees popped slots (and their warm starts) for the next pushes."""
        pool = self.meta[slots, 4]
        warm = pool[pool >= 0]
        self.warm -= len(warm)
        self.meta[slots, 4] = -1
        self.free_slots.extend(slots.tolist())
        self.free_warm.extend(warm.tolist())

    def compact_warm(self, capacity: int) -> None:
        """Moves the open domains' warm starts to the front of the pool and gives it `capacity` slots
        (at least as many as are live): the pool never shrinks otherwise, so after `drop_warm` this
        is what returns its memory.

        In place, `COMPACT_CHUNK` warm starts at a time (the i-th lowest live slot moves to slot i,
        never later, so no move overwrites a slot still to be read), then the arrays are cut
        (`_grow`: realloc, in place where numpy can). A version that gathered them into new arrays
        took 9.5 s for ~0.4 GB on the 64×64 CNN (fresh pages are slow to fault in on this VM) and, run
        near the deadline, made 60 s verify_bench queries end at 67–76 s (2026-12-07)."""
        self.compactions += 1
        open_slots = self.order_slot[self.head :]
        pool = self.meta[open_slots, 4]
        live = pool >= 0
        live_pool = pool[live]
        by = np.argsort(live_pool, kind="stable")
        sources, owners = live_pool[by], open_slots[live][by]
        n = len(sources)
        for start in range(0, n, COMPACT_CHUNK):
            part = slice(start, min(start + COMPACT_CHUNK, n))
            self.alphas[part] = self.alphas[sources[part]]  # the right side is a copy
            self.betas[part] = self.betas[sources[part]]
        self.meta[owners, 4] = np.arange(n)
        capacity = max(capacity, n)
        for name in ("alphas", "betas"):
            _grow(self, name, capacity)
        self.free_warm = list(range(capacity - 1, n - 1, -1))

    def drop_warm(self, count: int) -> int:
        """Strips the warm starts of the last `count` open domains to be popped that have one (the
        highest bounds; popped, they start from `cold`); returns how many were stripped."""
        highest = self.order_slot[self.head :][::-1]
        slots = highest[self.meta[highest, 4] >= 0][:count]
        if len(slots):
            self.free_warm.extend(self.meta[slots, 4].tolist())
            self.meta[slots, 4] = -1
            self.warm -= len(slots)
            self.dropped += len(slots)
        return len(slots)

    def nbytes(self) -> int:
        """Host bytes the memory cap counts: the open domains' records and the warm-start pool as
        allocated."""
        return len(self) * self.record_bytes + len(self.alphas) * self.warm_bytes

    def fit(self, memory: float) -> bool:
        """Keeps `nbytes()` within `memory` bytes; False when even the open domains' records exceed it.

        When the records and the pool as allocated no longer fit, the pool is cut to 3/4 of the room
        the records leave: the domains with the highest bounds (the last to be popped) drop their α
        and β until the live ones fit (popped, they start from the root's α and zero β: sound for any
        α ∈ [0, 1], β ≥ 0, only the warm start is lost), the pool is compacted to that size, and it
        grows no further (`warm_limit`: a push past it strips the next highest warm starts for its
        own slots, a free-list operation). The quarter left over is for the records to grow into,
        so the pool is copied again only once they have taken it. (Cut to the whole room, as before
        2026-12-07, the next domain's record put the store over the cap again: on the 784-256x2 MLP
        the ~2 GB pool was copied every few batches once the cap was reached, and a 120 s query
        bounded 1.1 M domains where 2.4 M were bounded under a cap it never reached.)
        """
        records = len(self) * self.record_bytes
        if records > memory:
            return False
        if self.nbytes() <= memory:
            return True
        capacity = int(0.75 * (memory - records) // self.warm_bytes)
        if self.warm > capacity:
            self.drop_warm(self.warm - capacity)
        self.compact_warm(capacity)
        self.warm_limit = capacity
        return True
