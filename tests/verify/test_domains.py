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


def test_the_store_matches_a_list_of_records_through_pushes_pops_and_dropped_warm_starts():
    rng = np.random.default_rng(0)
    store = D.OpenDomains(TOTAL, ROWS, cold(), warm_limit=8)
    ref = []  # (lower, order pushed, record dict, warm)
    order = largest = 0
    for step in range(40):
        b = batch(rng, int(rng.integers(0, 12)), step)
        store.push(**b)
        for i in range(len(b["lower"])):
            ref.append([b["lower"][i], order, {k: v[i] for k, v in b.items()}, True])
            order += 1
        if step % 7 == 3 and ref:  # the memory cap: the highest bounds lose their warm starts
            dropped = store.drop_warm(3)
            # The last to be popped lose theirs first: highest bound, then the later pushed.
            warm = sorted((r for r in ref if r[3]), key=lambda r: (r[0], r[1]), reverse=True)
            assert dropped == min(3, len(warm))
            for r in warm[:dropped]:
                r[3] = False
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


def test_the_warm_pool_grows_past_its_limit_only_as_far_as_a_push_needs():
    rng = np.random.default_rng(1)
    store = D.OpenDomains(TOTAL, ROWS, cold(), warm_limit=20)
    store.push(**batch(rng, 12, 0))
    store.push(**batch(rng, 12, 1))  # 24 > 20: exactly what it needs, not the doubling's 32
    assert len(store.alphas) == 24 and store.warm == 24
    store.release(store.pop(5))
    store.push(**batch(rng, 5, 2))  # reuses the released warm slots
    assert len(store.alphas) == 24


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
