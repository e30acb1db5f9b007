"""The order in which the reference scripts process the detections of each keyframe, vectorised.

MMAction2 0.x sorts each keyframe's rows by descending score (stable); the official ActivityNet script keeps the top
``capacity`` rows of each keyframe in a ``heapq`` and then sorts the heap by descending score, so the heap's array
layout decides the order of tied scores. :func:`reference_order` reproduces both exactly; the heap is simulated for
all keyframes at once (one numpy step per heap level), and only where its layout can change the result.
"""
from __future__ import annotations

import numpy as np

from ..data.ava_csv import AVARows

__all__ = ["order_codes", "reference_order", "simulate_heaps", "stable_argsort", "tuple_codes"]


def stable_argsort(code: np.ndarray) -> np.ndarray:
    """``np.argsort(code, kind="stable")`` of an integer array, as a least-significant-digit radix sort.

    Non-negative codes below 2**48 are sorted 16 bits at a time with numpy's stable sort of ``uint16`` (itself a
    radix sort, linear time); other codes go to ``np.argsort(kind="stable")``. Either way the result is the unique
    stable order (equal codes keep their index order).
    """
    code = np.asarray(code)
    if len(code) == 0:
        return np.zeros(0, np.intp)
    lo, hi = int(code.min()), int(code.max())
    if lo < 0 or hi >= 2**48:
        return np.argsort(code, kind="stable")
    order: np.ndarray | None = None
    shift = 0
    while True:
        digits = code if order is None else code[order]
        if shift:
            digits = digits >> shift
        step = np.argsort((digits & 0xFFFF).astype(np.uint16), kind="stable")
        order = step if order is None else order[step]
        shift += 16
        if hi >> shift == 0:
            return order


def order_codes(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Order-preserving dense integer codes of a float column (equal values -> equal codes), and their count."""
    if len(x) == 0:
        return np.zeros(0, np.int64), 1
    k = np.rint(x * 1000.0)
    if np.abs(k).max() < 2**40 and np.array_equal(k / 1000.0, x):  # 3-decimal values (the results csv)
        k = k.astype(np.int64)
        k -= k.min()
        return k, int(k.max()) + 1
    u, inv = np.unique(x, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), len(u)


def tuple_codes(scores: np.ndarray, labels: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 codes ordering rows like the tuples ``(score, action_id, y1, x1, y2, x2)`` of the official script,
    and the codes of the scores alone."""
    s_code, s_card = order_codes(scores)
    cols = [(s_code, s_card), (labels.astype(np.int64), int(labels.max()) + 1 if len(labels) else 1)]
    for j in (1, 0, 3, 2):
        cols.append(order_codes(boxes[:, j]))
    total = 1
    for _, card in cols:
        total *= card
    if total < 2**62:
        code = np.zeros(len(scores), np.int64)
        for c, card in cols:
            code = code * card + c
        return code, s_code
    o = np.lexsort([c for c, _ in cols[::-1]])
    diff = np.zeros(len(o), bool)
    for c, _ in cols:
        cs = c[o]
        diff[1:] |= cs[1:] != cs[:-1]
    code = np.empty(len(o), np.int64)
    code[o] = np.cumsum(diff)
    return code, s_code


def simulate_heaps(code: np.ndarray, s_code: np.ndarray, counts: np.ndarray,
                    capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Run the ``heapq`` push / ``heapreplace`` sequence of the official ``read_csv`` on many keyframes at once.

    Items are laid out key after key in arrival order (``counts`` per key, keys sorted by decreasing count);
    ``code`` orders them as the tuples do, ``s_code`` as their scores. Returns the heap arrays ``[K, width]`` of
    item indices (-1 for empty slots) and their fill sizes.
    """
    K = len(counts)
    nmax = int(counts.max()) if K else 0
    width = capacity if capacity > 0 else nmax
    H = np.full((K, max(width, 1)), -1, np.int64)
    HC = np.zeros((K, max(width, 1)), np.int64)
    start = np.zeros(K, np.int64)
    if K > 1:
        np.cumsum(counts[:-1], out=start[1:])
    neg = -counts
    for j in range(nmax):
        A = int(np.searchsorted(neg, -j, side="left"))  # keys with more than j items
        items = start[:A] + j
        c = code[items]
        if capacity <= 0 or j < capacity:  # heappush at slot j, then sift towards the root
            rows = np.arange(A)
            p = j
            while p > 0 and len(rows):
                par = (p - 1) >> 1
                pc = HC[rows, par]
                mv = c < pc
                st = ~mv
                if st.any():
                    rs = rows[st]
                    HC[rs, p] = c[st]
                    H[rs, p] = items[st]
                rows, c, items, pc = rows[mv], c[mv], items[mv], pc[mv]
                HC[rows, p] = pc
                H[rows, p] = H[rows, par]
                p = par
            if len(rows):
                HC[rows, p] = c
                H[rows, p] = items
            continue
        # heapreplace where the score beats the root's score
        acc = s_code[items] > s_code[H[:A, 0]]
        rows = np.flatnonzero(acc)
        if not len(rows):
            continue
        items, c = items[acc], c[acc]
        pos = np.zeros(len(rows), np.int64)
        while True:  # heapq._siftup: move the smaller child up until reaching a leaf (ties take the right child)
            child = 2 * pos + 1
            go = child < width
            if not go.any():
                break
            r, ch = rows[go], child[go]
            right = ch + 1
            has_r = right < width
            rr = np.where(has_r, right, ch)
            use_r = has_r & ~(HC[r, ch] < HC[r, rr])
            ch = np.where(use_r, rr, ch)
            pg = pos[go]
            HC[r, pg] = HC[r, ch]
            H[r, pg] = H[r, ch]
            pos[go] = ch
        while True:  # heapq._siftdown: bubble the new item up from that leaf
            par = (pos - 1) >> 1
            mv = pos > 0
            mv[mv] = c[mv] < HC[rows[mv], par[mv]]
            if not mv.any():
                break
            r, pm, pp = rows[mv], pos[mv], par[mv]
            HC[r, pm] = HC[r, pp]
            H[r, pm] = H[r, pp]
            pos[mv] = pp
        HC[rows, pos] = c
        H[rows, pos] = items
    sizes = np.minimum(counts, width) if capacity > 0 else counts.copy()
    return H, sizes


def reference_order(rows: AVARows, sel: np.ndarray, key_rank: np.ndarray, mode: str, capacity: int,
                stats: dict | None = None) -> np.ndarray:
    """Indices of the selected rows in the reference's processing order: keys in ``key_rank`` order, inside a key
    the reference's score order (stable sort by descending score in MMAction2; the heap of the official script,
    top-``capacity`` by score when ``capacity > 0``)."""
    idx = np.flatnonzero(sel)
    if len(idx) == 0:
        return idx
    kr = key_rank[rows.key[idx]]
    s_code, s_card = order_codes(rows.scores[idx])
    if (int(kr.max()) + 1) * s_card < 2**62:  # one stable sort of (key rank, descending score)
        # numpy's stable sort (timsort) here: the rows of a keyframe usually follow each other, the runs are long
        order = idx[np.argsort(kr * s_card + (s_card - 1 - s_code), kind="stable")]
    else:
        order = idx[np.lexsort((-rows.scores[idx], kr))]
    del s_code
    if mode != "official":
        return order
    # official: simulate the heap where its layout can matter, i.e. keys over capacity, or with two different
    # boxes of one class at one score (their order decides the greedy matching); elsewhere the score order is it.
    kr_o = key_rank[rows.key[order]]
    s_o = rows.scores[order]
    n = len(order)
    bounds = np.flatnonzero(np.r_[True, kr_o[1:] != kr_o[:-1], True])
    gstart, gend = bounds[:-1], bounds[1:]
    need = np.zeros(len(gstart), bool)
    truncate = np.zeros(len(gstart), bool)
    if capacity > 0:
        # A full heap admits a row only when its score beats the root's, and the root's score never falls. So the
        # kept rows are all rows scoring above the capacity-th best score t, plus some rows scoring exactly t: which
        # ones depends on the heap, unless no row beyond the first ``capacity`` scores t (then the kept set is the
        # top ``capacity`` by score and only tie order can still matter, checked below).
        over = (gend - gstart) > capacity
        oi = np.flatnonzero(over)
        boundary_tied = s_o[gstart[oi] + capacity - 1] == s_o[gstart[oi] + capacity]
        need[oi[boundary_tied]] = True
        truncate[oi[~boundary_tied]] = True
    tie = np.zeros(n, bool)
    tie[1:] = (kr_o[1:] == kr_o[:-1]) & (s_o[1:] == s_o[:-1])
    if tie.any():
        run_head = ~tie
        run_id = np.cumsum(run_head) - 1
        in_tie = tie | np.r_[tie[1:], False]
        t_rows = np.flatnonzero(in_tie)
        code = run_id[t_rows] * (int(rows.labels.max()) + 1) + rows.labels[order[t_rows]]
        srt = stable_argsort(code)
        c_s = code[srt]
        dup = np.flatnonzero(c_s[1:] == c_s[:-1])
        if len(dup):
            a = order[t_rows[srt[dup]]]
            b = order[t_rows[srt[dup + 1]]]
            diff_box = (rows.boxes[a] != rows.boxes[b]).any(1)
            amb_pos = t_rows[srt[dup[diff_box]]]
            grp = np.searchsorted(gstart, amb_pos, side="right") - 1
            need[grp] = True
    truncate &= ~need
    if truncate.any():  # rows beyond the capacity of keys whose kept set is their top rows: never evaluated
        ti = np.flatnonzero(truncate)
        cut = np.zeros(n + 1, np.int64)
        cut[gstart[ti] + capacity] = 1  # distinct positions: each inside its key's slice, before its end
        cut[gend[ti]] = -1
        dropped = np.cumsum(cut[:-1]) > 0
        if stats is not None:
            stats["detections_over_capacity"] = stats.get("detections_over_capacity", 0) + int(dropped.sum())
    else:
        dropped = None
    if not need.any():
        return order if dropped is None else order[~dropped]

    # the simulated keys: their rows in arrival (file) order, keys by decreasing count
    gsel = np.flatnonzero(need)
    cnts = (gend - gstart)[gsel]
    kord = np.argsort(-cnts, kind="stable")
    gsel, cnts = gsel[kord], cnts[kord]
    # rows of those keys in arrival (file) order, keys in the order of gsel
    rank_of_kr = np.full(int(kr.max()) + 1, -1, np.int64)
    rank_of_kr[kr_o[gstart[gsel]]] = np.arange(len(gsel))
    row_rank = rank_of_kr[kr]                   # per selected row, in file order
    in_sim = np.flatnonzero(row_rank >= 0)
    seg_rows = idx[in_sim][stable_argsort(row_rank[in_sim])]
    code, s_code = tuple_codes(rows.scores[seg_rows], rows.labels[seg_rows], rows.boxes[seg_rows])
    H, sizes = simulate_heaps(code, s_code, cnts, capacity)
    # sorted(entries, key=-score): stable over the heap array order
    filled = np.arange(H.shape[1])[None, :] < sizes[:, None]
    sk = np.where(filled, -s_code[np.maximum(H, 0)], np.iinfo(np.int64).max)
    H = np.take_along_axis(H, np.argsort(sk, axis=1, kind="stable"), axis=1)
    # write each key's kept rows over the start of its slice of ``order``; drop the rest of the slice
    out = order.copy()
    keep = np.ones(n, bool)
    starts_sel = gstart[gsel]
    within = np.arange(H.shape[1])[None, :]
    dest = (starts_sel[:, None] + within)[filled]
    out[dest] = seg_rows[H[filled]]
    drop = (within < cnts[:, None]) & ~filled if H.shape[1] >= int(cnts.max()) else None
    if drop is not None:
        keep[(starts_sel[:, None] + within)[drop]] = False
    else:
        over = np.flatnonzero(cnts > sizes)
        for i in over.tolist():
            keep[starts_sel[i] + sizes[i]:starts_sel[i] + cnts[i]] = False
    if stats is not None:
        stats["detections_over_capacity"] = stats.get("detections_over_capacity", 0) + int((~keep).sum())
    if dropped is not None:
        keep &= ~dropped
    return out[keep]
