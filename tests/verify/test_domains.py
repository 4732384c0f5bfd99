"""Branch-and-bound's host store of open domains (`lnjax.verify.domains`): best-first order, slots and
warm starts kept apart per domain through pushes, pops, releases and dropped warm starts, checked
against a plain list of per-domain records; the batched children against a per-domain loop."""

from __future__ import annotations

import numpy as np
import pytest

from lnjax.verify import domains as D

TOTAL, ROWS = 7, 2


def cold():
    return np.full((ROWS, TOTAL), 0.5, np.float16), np.zeros((ROWS, TOTAL), np.float16)


def batch(rng, n, tag):
    """n domains whose every field encodes (tag, i), so a mix-up between slots shows."""
    ids = tag * 1000 + np.arange(n)
    return dict(
        lower=rng.normal(size=n).round(1),  # rounded: ties, which must pop first-pushed first
        splits=rng.integers(-1, 2, size=(n, TOTAL)).astype(np.int8),
        row_lower=np.stack([ids, -ids], axis=1).astype(np.float64),
        branch=rng.integers(0, TOTAL, size=n),
        free=rng.integers(0, 5, size=n),
        depth=ids,
        rebounds=rng.integers(0, 3, size=n),
        alphas=(ids[:, None, None] % 97 / 97 + np.zeros((n, ROWS, TOTAL))).astype(np.float16),
        betas=(ids[:, None, None] % 89 + np.zeros((n, ROWS, TOTAL))).astype(np.float16),
    )


def strip_highest(ref, count):
    """The reference's memory cap: the last to be popped (highest bound, then the later pushed) of the
    warm records lose their warm starts, up to `count`; returns how many did."""
    warm = sorted((r for r in ref if r[3]), key=lambda r: (r[0], r[1]), reverse=True)
    for r in warm[:count]:
        r[3] = False
    return min(count, len(warm))


@pytest.mark.parametrize("limit, chunk", [(None, 256), (8, 256), (None, 2)])
def test_the_store_matches_a_list_of_records_through_pushes_pops_and_dropped_warm_starts(
    limit, chunk, monkeypatch
):
    """limit 8: pushes past the warm pool's limit strip the highest open domains' warm starts for
    their own (the pool stays at 8 slots); None: the pool grows. chunk 2: the in-place compaction
    moves its warm starts 2 at a time (a move order that overwrote a slot still to be read fails
    here: checked by running the chunks last first)."""
    monkeypatch.setattr(D, "COMPACT_CHUNK", chunk)
    rng = np.random.default_rng(0)
    store = D.OpenDomains(TOTAL, ROWS, cold(), warm_limit=limit)
    ref = []  # (lower, order pushed, record dict, warm)
    order = largest = widest = 0
    for step in range(40):
        b = batch(rng, int(rng.integers(0, 12)), step)
        short = len(b["lower"]) - len(store.free_warm)
        if limit is not None and short > 0:
            strip_highest(ref, min(len(store.alphas) + short - limit, short))
        store.push(**b)
        widest = max(widest, len(b["lower"]))
        if limit is not None:  # the pool grows past the limit only as far as one push needs
            assert len(store.alphas) <= max(limit, widest)
        for i in range(len(b["lower"])):
            ref.append([b["lower"][i], order, {k: v[i] for k, v in b.items()}, True])
            order += 1
        if step % 7 == 3 and ref:  # the memory cap: the highest bounds lose their warm starts
            assert store.drop_warm(3) == strip_highest(ref, 3)
            live = sum(r[3] for r in ref)
            store.compact_warm(live + step % 3)  # and the pool shrinks to what is live (+ a little)
            assert len(store.alphas) == live + step % 3
        assert len(store) == len(ref) and store.warm == sum(r[3] for r in ref)
        largest = max(largest, len(ref))
        n = int(rng.integers(0, 10))
        ref.sort(key=lambda r: (r[0], r[1]))
        expect, ref = ref[:n], ref[n:]
        assert store.bounds()[: len(expect)] == [r[0] for r in expect]  # the bounds popped next
        slots = store.pop(n)
        assert len(slots) == len(expect)
        alphas, betas = store.warm_starts(store.pool_of(slots))
        branch, free, depth, rebounds = store.meta_of(slots)
        for j, (_, _, rec, warm) in enumerate(expect):
            d = store.domain(int(slots[j]))
            np.testing.assert_array_equal(d.splits, rec["splits"])
            np.testing.assert_array_equal(d.row_lower, rec["row_lower"])
            assert (d.branch, d.free, d.depth, d.rebounds) == (
                rec["branch"],
                rec["free"],
                rec["depth"],
                rec["rebounds"],
            )
            assert (branch[j], free[j], depth[j], rebounds[j]) == (d.branch, d.free, d.depth, d.rebounds)
            want = (rec["alphas"], rec["betas"]) if warm else cold()
            np.testing.assert_array_equal(alphas[j], want[0])
            np.testing.assert_array_equal(betas[j], want[1])
            assert (d.alphas is None) is (not warm)
        store.release(slots)
    # Slots are reused: the record arrays stay within twice the largest open set.
    assert len(store.splits) <= 2 * max(16, largest)
    assert sorted(store.bounds()) == sorted(r[0] for r in ref)


def test_the_root_is_cold_before_anything_is_pushed():
    store = D.OpenDomains(TOTAL, ROWS, cold())
    alphas, betas = store.warm_starts(np.asarray([-1, -1, -1]))
    assert alphas.shape == (3, ROWS, TOTAL) and np.all(alphas == 0.5) and np.all(betas == 0)


def test_a_push_past_the_warm_limit_strips_the_highest_warm_starts_instead_of_growing_the_pool():
    rng = np.random.default_rng(1)
    store = D.OpenDomains(TOTAL, ROWS, cold(), warm_limit=20)
    first = batch(rng, 12, 0)
    store.push(**first)
    store.push(**batch(rng, 12, 1))  # 24 > 20: 4 of the open ones go cold, the pool stays at 20
    assert len(store.alphas) == 20 and store.warm == 20 and store.dropped == 4
    store.release(store.pop(5))
    store.push(**batch(rng, 5, 2))  # reuses the released warm slots: nothing more stripped
    assert len(store.alphas) == 20 and store.dropped == 4
    big = D.OpenDomains(TOTAL, ROWS, cold(), warm_limit=4)
    big.push(**batch(rng, 6, 3))  # one push larger than the limit: it grows as far as it needs
    assert len(big.alphas) == 6 and big.warm == 6


def run_under_cap(memory, steps=300, seed=4):
    """A best-first run's pattern of pushes and pops (2 children per popped parent, most kept, so the
    open set grows) under `memory` bytes, `fit` before every pop as `Bab` does. Returns the store
    and whether `fit` ever let it exceed the cap."""
    rng = np.random.default_rng(seed)
    store = D.OpenDomains(TOTAL, ROWS, cold(), warm_limit=int(memory // D.warm_bytes(TOTAL, ROWS)))
    store.push(**batch(rng, 4, 0))
    over = False
    for step in range(1, steps):
        assert store.fit(memory)
        over |= store.nbytes() > memory
        parents = store.pop(4)
        store.release(parents)
        store.push(**batch(rng, 2 * len(parents) - int(rng.integers(0, 2)), step))
    return store, over


def test_fit_keeps_the_store_under_the_cap_and_copies_the_pool_rarely():
    """Records of ~1.2 k domains and warm starts of ~300 fit in the cap: the run goes far past both
    (~1 k open at the end) and the pool is cut a few times, not at every batch; with the cut to the
    whole room (the bug of 2026-12-07: `fit` without the quarter left for the records to grow
    into) it was copied at almost every batch."""
    rec, warm = D.record_bytes(TOTAL, ROWS), D.warm_bytes(TOTAL, ROWS)
    memory = 1200 * rec + 300 * warm
    store, over = run_under_cap(memory)
    assert not over and len(store) > 1000
    assert store.dropped > 0 and 1 <= store.compactions <= 8
    # Every open domain still reads its own record; the warm ones their own α (`batch` tags them).
    slots = store.pop(len(store))
    alphas, _ = store.warm_starts(store.pool_of(slots))
    for j, s in enumerate(slots):
        d = store.domain(int(s))
        tag = d.depth % 97 / 97
        want = cold()[0] if d.alphas is None else np.full((ROWS, TOTAL), tag, np.float16)
        np.testing.assert_array_equal(alphas[j], want)


def test_fit_says_no_when_the_records_alone_exceed_the_cap():
    rng = np.random.default_rng(5)
    store = D.OpenDomains(TOTAL, ROWS, cold())
    store.push(**batch(rng, 50, 0))
    assert not store.fit(10 * D.record_bytes(TOTAL, ROWS))
    assert store.fit(50 * D.record_bytes(TOTAL, ROWS))  # the records fit: every warm start goes
    assert store.warm == 0 and store.nbytes() <= 50 * D.record_bytes(TOTAL, ROWS)


def test_the_records_grow_geometrically():
    """One domain at a time, 100 times: the record arrays double (16, 32, 64, 128), they are not
    copied at every push (the first version grew them by exactly what a push needed: 42 % of an MLP
    query's time went into those copies)."""
    rng = np.random.default_rng(2)
    store = D.OpenDomains(TOTAL, ROWS, cold())
    sizes = set()
    for i in range(100):
        store.push(**batch(rng, 1, i))
        sizes.add(len(store.splits))
    assert sizes == {16, 32, 64, 128} and len(store.alphas) == 128


def test_growing_in_place_never_leaves_a_view_dangling():
    """The arrays grow in place (realloc) when nothing else holds them; a view held elsewhere makes
    numpy refuse, and the store copies instead: the view keeps reading the old, intact data."""
    rng = np.random.default_rng(3)
    store = D.OpenDomains(TOTAL, ROWS, cold())
    store.push(**batch(rng, 16, 0))
    store.push(**batch(rng, 1, 1))  # 17 > 16: grows (in place where numpy can)
    assert len(store.splits) == 32
    view = store.splits[:17]
    kept = view.copy()
    store.push(**batch(rng, 16, 2))  # 33 > 32: the view forbids the in-place path
    assert len(store.splits) == 64 and not np.shares_memory(view, store.splits)
    np.testing.assert_array_equal(view, kept)
    np.testing.assert_array_equal(store.splits[:17], kept)


def loop_children(splits, branch, split):
    out, parent = [], []
    for j in range(len(splits)):
        kids = D.children(splits[j], int(branch[j])) if split[j] else [splits[j]]
        out += kids
        parent += [j] * len(kids)
    return np.asarray(out), np.asarray(parent)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_children_equal_the_per_domain_ones(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    splits = rng.integers(-1, 2, size=(9, TOTAL)).astype(np.int8)
    branch = rng.integers(0, TOTAL, size=9)
    split = rng.random(9) < 0.7
    kids, parent = D.split_children(splits, branch, split)
    expect_kids, expect_parent = loop_children(splits, branch, split)
    np.testing.assert_array_equal(kids, expect_kids)
    np.testing.assert_array_equal(parent, expect_parent)
    assert len(kids) == 9 + split.sum()
    # Each split parent's children fix its branch neuron to 1 and then −1, the rest as the parent.
    for j in np.flatnonzero(split):
        rows = np.flatnonzero(parent == j)
        assert [kids[r][branch[j]] for r in rows] == list(D.PHASES)
        for r in rows:
            np.testing.assert_array_equal(np.delete(kids[r], branch[j]), np.delete(splits[j], branch[j]))


def test_the_pool_shrinks_in_place_or_by_a_copy_when_a_view_is_held():
    """`compact_warm` cuts the pool with `_grow` (realloc); a view held elsewhere makes numpy refuse
    and the store copies the first rows instead (a shrink, so only as many as fit)."""
    rng = np.random.default_rng(6)
    for hold in (False, True):
        store = D.OpenDomains(TOTAL, ROWS, cold())
        b = batch(rng, 16, 0)
        store.push(**b)
        store.drop_warm(10)
        view = store.alphas[:4] if hold else None
        store.compact_warm(8)
        assert len(store.alphas) == 8 and store.warm == 6
        alphas, _ = store.warm_starts(store.pool_of(store.pop(16)))
        warm = sorted(np.argsort(b["lower"], kind="stable")[:6])  # the 6 lowest kept theirs
        got = sorted(round(float(a[0, 0]) * 97) for a in alphas if a[0, 0] != cold()[0][0, 0])
        assert got == sorted(int(b["depth"][i]) % 97 for i in warm)
        assert view is None or view.shape == (4, ROWS, TOTAL)


def test_a_push_past_the_limit_strips_a_share_of_the_pool_at_once():
    """At least limit / DROP_SHARE warm starts go at a time (each strip scans the open order), so the
    next pushes find free slots without another scan."""
    rng = np.random.default_rng(7)
    limit = 4 * D.DROP_SHARE
    store = D.OpenDomains(TOTAL, ROWS, cold(), warm_limit=limit)
    store.push(**batch(rng, limit, 0))
    store.push(**batch(rng, 1, 1))  # one past the limit: 4 stripped, not 1
    assert store.dropped == 4 and len(store.alphas) == limit and store.warm == limit - 3
    store.push(**batch(rng, 3, 2))  # fits in what was freed: no strip
    assert store.dropped == 4 and store.warm == limit
