"""The order in which the reference scripts process the detections of each keyframe, vectorised.

MMAction2 0.x sorts each keyframe's rows by descending score (stable); the official ActivityNet script keeps the top
``capacity`` rows of each keyframe in a ``heapq`` and then sorts the heap by descending score, so the heap's array
layout decides the order of tied scores. :func:`reference_order` reproduces both as far as the evaluation can tell:
the rows the heap keeps are found by counting (:func:`_kept_by_heap`), and the heap's layout is simulated (for all
such keyframes at once, one numpy step per heap level) only where it can change the result: two different boxes of
one class at one score. Rows of different classes at one score may come in another order than the reference's.
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
    # official: which rows the heap keeps (closed form, below), then the heap's layout only where it can matter:
    # two different boxes of one class at one score in one keyframe (their order decides the greedy matching; any
    # other order among equal scores gives the same evaluation).
    kr_o = key_rank[rows.key[order]]
    s_o = rows.scores[order]
    bounds = np.flatnonzero(np.r_[True, kr_o[1:] != kr_o[:-1], True])
    gstart, counts = bounds[:-1], np.diff(bounds)
    if capacity > 0 and int(counts.max()) > capacity:
        keep = _kept_by_heap(rows, idx, kr, order, kr_o, s_o, gstart, counts, capacity)
        if stats is not None:
            stats["detections_over_capacity"] = stats.get("detections_over_capacity", 0) + int((~keep).sum())
        order, kr_o, s_o = order[keep], kr_o[keep], s_o[keep]
        kstart = np.zeros(len(counts), np.int64)  # each key keeps min(count, capacity) rows
        np.cumsum(np.minimum(counts, capacity)[:-1], out=kstart[1:])
    else:
        kstart = gstart
    need = _keys_with_ambiguous_ties(rows, order, kr_o, s_o, kstart)
    if not need.any():
        return order

    # the simulated keys: all their rows in arrival (file) order, keys by decreasing count
    gsel = np.flatnonzero(need)
    cnts = counts[gsel]
    kord = np.argsort(-cnts, kind="stable")
    gsel, cnts = gsel[kord], cnts[kord]
    seg_rows = _rows_in_arrival_order(idx, kr, kr_o[kstart[gsel]])
    code, s_code = tuple_codes(rows.scores[seg_rows], rows.labels[seg_rows], rows.boxes[seg_rows])
    H, sizes = simulate_heaps(code, s_code, cnts, capacity)
    # sorted(entries, key=-score): stable over the heap array order
    filled = np.arange(H.shape[1])[None, :] < sizes[:, None]
    sk = np.where(filled, -s_code[np.maximum(H, 0)], np.iinfo(np.int64).max)
    H = np.take_along_axis(H, np.argsort(sk, axis=1, kind="stable"), axis=1)
    # the heap holds the rows the closed form kept (sizes = min(count, capacity)): write them over each key's slice
    out = order.copy()
    dest = (kstart[gsel][:, None] + np.arange(H.shape[1])[None, :])[filled]
    out[dest] = seg_rows[H[filled]]
    return out


def _rows_in_arrival_order(idx: np.ndarray, kr: np.ndarray, key_ranks: np.ndarray) -> np.ndarray:
    """The rows ``idx`` (file order, key rank ``kr``) of the keys ``key_ranks``: key after key in that order,
    file order inside a key."""
    rank_of_kr = np.full(int(kr.max()) + 1, -1, np.int64)
    rank_of_kr[key_ranks] = np.arange(len(key_ranks))
    row_rank = rank_of_kr[kr]
    inside = np.flatnonzero(row_rank >= 0)
    return idx[inside[stable_argsort(row_rank[inside])]]


def _kept_by_heap(rows: AVARows, idx: np.ndarray, kr: np.ndarray, order: np.ndarray, kr_o: np.ndarray,
                  s_o: np.ndarray, gstart: np.ndarray, counts: np.ndarray, capacity: int) -> np.ndarray:
    """Which positions of ``order`` (keys in slices ``gstart``/``counts``, descending score inside) the official
    ``read_csv`` heap keeps, without simulating it.

    Let t be a key's capacity-th best score. Rows above t are always kept (the root's score never exceeds t), rows
    below t never (at the end all kept rows score >= t). Which rows scoring t stay follows from a count: the heap
    holds its first ``capacity`` arrivals, L0 of them below t. After that, rows below t only ever replace rows below
    t, so the count L of rows below t in the heap falls by one with each later arrival scoring >= t (which replaces
    the root, a row below t) until it reaches 0; from then on a row scoring t is refused and a row above t replaces
    the smallest tuple ``(t, action_id, y1, x1, y2, x2)`` left. So the rows scoring t that stay are those among the
    first ``capacity`` arrivals or the next L0 arrivals scoring >= t, less the k smallest tuples, k being the number
    of later arrivals above t.
    """
    keep = np.ones(len(order), bool)
    over = np.flatnonzero(counts > capacity)
    t = s_o[gstart[over] + capacity - 1]
    tied = s_o[gstart[over] + capacity] == t
    untied = over[~tied]
    if len(untied):  # the top ``capacity`` rows
        cut = np.zeros(len(order) + 1, np.int64)
        cut[gstart[untied] + capacity] = 1
        cut[gstart[untied] + counts[untied]] = -1
        keep &= np.cumsum(cut[:-1]) <= 0
    b = over[tied]
    if not len(b):
        return keep
    nb = counts[b]
    a_rows = _rows_in_arrival_order(idx, kr, kr_o[gstart[b]])
    a_start = np.zeros(len(b), np.int64)
    np.cumsum(nb[:-1], out=a_start[1:])
    a_grp = np.repeat(np.arange(len(b)), nb)
    a_pos = np.arange(len(a_rows)) - a_start[a_grp]
    s = rows.scores[a_rows]
    ta = t[tied][a_grp]
    below, at = s < ta, s == ta
    first = a_pos < capacity
    l0 = np.bincount(a_grp[first & below], minlength=len(b))
    late = ~first & ~below
    late_rank = np.cumsum(late)  # 1-based rank of a late arrival among its key's late arrivals
    late_rank -= np.r_[0, late_rank[:-1]][a_start][a_grp]
    free = late & (late_rank <= l0[a_grp])
    cand = np.flatnonzero(at & (first | free))
    k = np.bincount(a_grp[late & ~at & ~free], minlength=len(b))
    # evict the k smallest candidate tuples of each key
    cr = a_rows[cand]
    bx = rows.boxes[cr]
    o = np.lexsort((bx[:, 2], bx[:, 3], bx[:, 0], bx[:, 1], rows.labels[cr], a_grp[cand]))
    cg = a_grp[cand][o]
    rank = np.arange(len(o)) - np.searchsorted(cg, cg)
    dropped = below | at  # rows scoring t: dropped unless a candidate that is not evicted
    dropped[cand] = False
    dropped[cand[o[rank < k[cg]]]] = True
    drop_row = np.zeros(len(rows.scores), bool)
    drop_row[a_rows[dropped]] = True
    return keep & ~drop_row[order]


def _keys_with_ambiguous_ties(rows: AVARows, order: np.ndarray, kr_o: np.ndarray, s_o: np.ndarray,
                              kstart: np.ndarray) -> np.ndarray:
    """Per key (slices of ``order`` starting at ``kstart``): do two rows of one class at one score have different
    boxes?"""
    need = np.zeros(len(kstart), bool)
    tie = np.zeros(len(order), bool)
    tie[1:] = (kr_o[1:] == kr_o[:-1]) & (s_o[1:] == s_o[:-1])
    if not tie.any():
        return need
    run_id = np.cumsum(~tie) - 1
    t_rows = np.flatnonzero(tie | np.r_[tie[1:], False])
    code = run_id[t_rows] * (int(rows.labels.max()) + 1) + rows.labels[order[t_rows]]
    srt = stable_argsort(code)
    c_s = code[srt]
    dup = np.flatnonzero(c_s[1:] == c_s[:-1])
    if len(dup):
        a = order[t_rows[srt[dup]]]
        b = order[t_rows[srt[dup + 1]]]
        amb_pos = t_rows[srt[dup[(rows.boxes[a] != rows.boxes[b]).any(1)]]]
        need[np.searchsorted(kstart, amb_pos, side="right") - 1] = True
    return need
