"""Dissolve polygon outlines along seam lines, with work proportional to the seams, not the outlines.

Pure math, no I/O. The pieces a block grid cut (:mod:`geounet.vectorize.outline` rings, in
pixel coordinates of the whole grid) meet only along the seam lines. Only the segments
*on* a seam line can cancel (a unit edge two pieces of one group share, once in each
direction); every other vertex stays where it is, in the order it already has. So each ring
is cut at its seam segments into

* **chains**: the maximal runs of segments off the seams, kept as one element each
  (start point, end point, first and last heading, a vertex range of the input ring);
* **unit segments** of the seam segments, of which those shared within a group cancel;
* **loops**: rings that touch no seam at all (holes of the pieces), kept whole.

Chains and surviving unit segments are linked end to start (one sort of their end points),
the element cycles ranked by pointer jumping, and only then expanded to vertices, in output
order, a batch at a time. On a 6000² scene whose regions span the whole grid, 15k seam
pieces hold 7.4 M vertices but only ~10⁵ chains: the linking and ranking touch the chains,
so time and memory no longer grow with the regions' outline length.

Rings keep the rules of :func:`geounet.vectorize.outline.trace`: the region on the left
in (x, y) pixel coordinates (shells have positive signed area), shell first, no collinear
vertices, and where a group touches itself only at a corner the ring turns around the
pixel outside the group.

Example:
    >>> import numpy as np
    >>> from geounet.vectorize.outline import trace
    >>> left = trace(np.array([[1], [1]], dtype=np.int32), 1)            # column 0
    >>> right = trace(np.array([[1], [0]], dtype=np.int32), 1)           # column 1
    >>> both = Outlines(np.concatenate((left.x, right.x + 1)), np.concatenate((left.y, right.y)),
    ...                 np.array([0, 5, 10]), np.array([0, 1, 2]))
    >>> m = merge(both, np.array([0, 0]), 1, (np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0])))
    >>> import shapely
    >>> shapely.normalize(m.polygons()[0]).wkt  # one L-shaped polygon; the ring may start anywhere
    'POLYGON ((0 0, 0 2, 1 2, 1 1, 2 1, 2 0, 0 0))'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geounet.vectorize.outline import E, N, Outlines, S, W, _offsets, _rank

_STEP = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])  # (dx, dy) of E, S, W, N

#: Vertices expanded per batch when the linked rings are written out (bounds the index arrays).
BATCH = 1 << 19


@dataclass(frozen=True)
class _Elements:
    """Chains, unit segments and loops as parallel arrays (see the module docstring).

    ``base``/``length`` are the input ring's first vertex and segment count, ``first`` the
    element's first vertex there and ``count`` its vertices (its end vertex is the next
    element's start); unit segments have ``length`` 0 and take their start from ``ux``/``uy``.
    """

    sx: np.ndarray
    sy: np.ndarray
    ex: np.ndarray
    ey: np.ndarray
    group: np.ndarray
    h0: np.ndarray  # heading of the first segment
    h1: np.ndarray  # heading of the last segment
    area2: np.ndarray  # twice the signed area the element's segments add (shoelace)
    base: np.ndarray
    length: np.ndarray
    first: np.ndarray
    count: np.ndarray


def merge(
    parts: Outlines, group: np.ndarray, n_groups: int, seams: tuple[np.ndarray, np.ndarray]
) -> Outlines:
    """Dissolve polygons into one per group: the edges two polygons of a group share vanish.

    ``parts`` are outlines from :func:`geounet.vectorize.outline.trace` (integer offsets,
    same orientation) that meet only along the seam lines ``seams = (xs, ys)`` (the x of
    vertical and y of horizontal cut lines); ``group[i]`` in 0..n_groups-1 is the polygon
    each part becomes, and each group's parts must form one 4-connected region. Returns
    the groups' polygons in order.
    """
    if len(parts.x) == 0:
        return Outlines(np.zeros(0), np.zeros(0), np.zeros(1, np.int64), np.zeros(n_groups + 1, np.int64))
    ring_group = np.repeat(group, np.diff(parts.poly_offsets)).astype(np.int64)
    on = _seam_segments(parts, seams)
    stops = _stops(parts, on, ring_group)
    c = _shoelace(parts)
    linked = _linkable(parts, on, stops, ring_group, c)
    loops = _loops(parts, stops, ring_group, c)
    del c
    succ, heading_in = _link(linked)
    keep_start = heading_in != linked.h0
    ring, pos, n_rings = _cycles(succ)
    ring = np.concatenate((ring, n_rings + np.arange(len(loops.group))))
    pos = np.concatenate((pos, np.zeros(len(loops.group), dtype=np.int64)))
    elements = _concat(linked, loops)
    keep_start = np.concatenate((keep_start, np.ones(len(loops.group), dtype=bool)))
    del linked, loops, succ, heading_in  # concatenated into elements: ~50 MB at 6000² while expanding
    return _expand(parts, elements, ring, pos, keep_start, n_groups)


# -- internals ---------------------------------------------------------------------------


def _seam_segments(parts: Outlines, seams: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Indices (= start vertex) of the ring segments lying on a seam line, ascending."""
    x, y = parts.x, parts.y
    on = (y[:-1] == y[1:]) & np.isin(y[:-1], seams[1])
    on |= (x[:-1] == x[1:]) & np.isin(x[:-1], seams[0])
    on[parts.ring_offsets[1:-1] - 1] = False  # a ring's closing vertex starts no segment
    return np.flatnonzero(on)


def _headings(parts: Outlines, k: np.ndarray) -> np.ndarray:
    dx = parts.x[k + 1] - parts.x[k]
    dy = parts.y[k + 1] - parts.y[k]
    return np.select([dx > 0, dy > 0, dx < 0], [E, S, W], N)


def _shoelace(parts: Outlines) -> np.ndarray:
    """Prefix sums of the segments' cross products: sum over segments a..b-1 is c[b] - c[a].

    Exact: the vertices are integers, and every partial sum stays far below 2**53.
    """
    x, y = parts.x, parts.y
    c = np.zeros(len(x))
    for a in range(0, len(x) - 1, BATCH):  # in batches: no full-length temporaries
        b = min(a + BATCH, len(x) - 1)
        cross = c[a + 1 : b + 1]
        np.multiply(x[a:b], y[a + 1 : b + 1], out=cross, dtype=np.float64)  # (int32 vertices: no overflow)
        cross -= np.multiply(x[a + 1 : b + 1], y[a:b], dtype=np.float64)
    np.cumsum(c, out=c)
    return c


def _range_area(
    c: np.ndarray, base: np.ndarray, length: np.ndarray, first: np.ndarray, n: np.ndarray
) -> np.ndarray:
    """Twice the signed area of ``n`` segments of a ring from ``first``, wrapping at the ring's end."""
    stop = first + n
    end = base + length
    wrap = stop > end
    area: np.ndarray = c[np.minimum(stop, end)] - c[first]
    area[wrap] += c[(stop - length)[wrap]] - c[base[wrap]]
    return area


def _stops(parts: Outlines, on: np.ndarray, ring_group: np.ndarray) -> np.ndarray:
    """Where chains end, ascending: the seam segments and every vertex two rings of one group share.

    A group can touch itself at a corner inside a block, between two pieces of that block
    (diagonal pixels, each traced around its own pixel): there its rings must turn the
    other way once the pieces are one polygon, so the linking has to see that vertex.
    Finding them takes one sort of the vertices' (group, y, x) keys.
    """
    ro = parts.ring_offsets
    closing = ro[1:] - 1
    key = _point_key(np.repeat(ring_group, np.diff(ro)), parts.y, parts.x)
    key[closing] = -1 - np.arange(len(closing))  # a ring's closing vertex repeats its first
    order = np.argsort(key, kind="stable")
    key = key[order]
    dup = np.flatnonzero(key[1:] == key[:-1])
    del key
    shared = np.unique(np.concatenate((order[dup], order[dup + 1])))
    return np.union1d(on, shared)


def _linkable(
    parts: Outlines, on: np.ndarray, stops: np.ndarray, ring_group: np.ndarray, c: np.ndarray
) -> _Elements:
    """The chains between stops (see :func:`_stops`) and the unit seam segments that do not cancel."""
    ro = parts.ring_offsets
    ring_of = np.searchsorted(ro, stops, side="right") - 1
    base, length = ro[ring_of], ro[ring_of + 1] - ro[ring_of] - 1
    is_on = np.isin(stops, on)
    after = stops + 1  # the segment after a stop starts a chain unless it is on a seam
    wraps = after == base + length
    after[wraps] = base[wraps]
    start = np.where(is_on, after, stops)
    at = np.searchsorted(on, start)
    off = at >= len(on)
    off[~off] = on[at[~off]] != start[~off]
    start, r, b, n_seg = start[off], ring_of[off], base[off], length[off]
    start, keep = np.unique(start, return_index=True)  # a cut vertex right after a seam segment
    r, b, n_seg = r[keep], b[keep], n_seg[keep]
    nxt = np.searchsorted(stops, start, side="right")
    same = nxt < len(stops)
    same[same] = ring_of[nxt[same]] == r[same]
    first_stop = stops[np.searchsorted(ring_of, r, side="left")]
    stop = np.where(same, stops[np.minimum(nxt, len(stops) - 1)], first_stop)
    count = (stop - start - 1) % n_seg + 1  # the chain's segments = its vertices before its end vertex
    last = np.where(stop > b, stop - 1, b + n_seg - 1)
    chains = _Elements(
        sx=parts.x[start],
        sy=parts.y[start],
        ex=parts.x[stop],
        ey=parts.y[stop],
        group=ring_group[r],
        h0=_headings(parts, start),
        h1=_headings(parts, last),
        area2=_range_area(c, b, n_seg, start, count),
        base=b,
        length=n_seg,
        first=start,
        count=count,
    )
    return _concat(chains, _units(parts, on, ring_group[np.searchsorted(ro, on, side="right") - 1]))


def _units(parts: Outlines, on: np.ndarray, group: np.ndarray) -> _Elements:
    """Seam segments cut into unit edges; a unit edge two pieces of one group share cancels."""
    x0, y0, x1, y1 = parts.x[on], parts.y[on], parts.x[on + 1], parts.y[on + 1]
    dx, dy = np.sign(x1 - x0), np.sign(y1 - y0)
    n = (np.abs(x1 - x0) + np.abs(y1 - y0)).astype(np.int64)
    seg = np.repeat(np.arange(len(n)), n)
    k = np.arange(len(seg)) - np.repeat(_offsets(n)[:-1], n)
    ux0, uy0 = x0[seg] + k * dx[seg], y0[seg] + k * dy[seg]
    ux1, uy1, ug = ux0 + dx[seg], uy0 + dy[seg], group[seg]
    xm, ym = np.minimum(ux0, ux1), np.minimum(uy0, uy1)
    key = _point_key(ug, ym, xm) * 2 + (uy0 == uy1)  # the same key in both directions
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    alone = counts[inverse] == 1
    heading = np.select([dx > 0, dy > 0, dx < 0], [E, S, W], N)[seg][alone]
    zero = np.zeros(int(alone.sum()), dtype=np.int64)
    return _Elements(
        sx=ux0[alone],
        sy=uy0[alone],
        ex=ux1[alone],
        ey=uy1[alone],
        group=ug[alone],
        h0=heading,
        h1=heading,
        area2=(ux0 * uy1 - ux1 * uy0)[alone],
        base=zero,
        length=zero,
        first=zero,
        count=zero + 1,
    )


def _loops(parts: Outlines, stops: np.ndarray, ring_group: np.ndarray, c: np.ndarray) -> _Elements:
    """The rings without a stop (no seam segment, no shared vertex): each one element, closed."""
    ro = parts.ring_offsets
    touched = np.zeros(len(ro) - 1, dtype=bool)
    touched[np.searchsorted(ro, stops, side="right") - 1] = True
    r = np.flatnonzero(~touched)
    base, length = ro[r], ro[r + 1] - ro[r] - 1
    xs, ys = parts.x[base], parts.y[base]
    h = np.zeros(len(r), dtype=np.int64)
    return _Elements(
        xs,
        ys,
        xs,
        ys,
        ring_group[r],
        h,
        h,
        _range_area(c, base, length, base, length),
        base,
        length,
        base,
        length,
    )


def _concat(a: _Elements, b: _Elements) -> _Elements:
    return _Elements(
        *(np.concatenate((getattr(a, f), getattr(b, f))) for f in _Elements.__dataclass_fields__)
    )


def _point_key(g: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """One int64 per (group, y, x) of non-negative integers, ordered like the tuples."""
    if len(g) == 0:
        return np.zeros(0, dtype=np.int64)
    ny, nx = int(y.max()) + 2, int(x.max()) + 2
    if (int(g.max()) + 1) * ny * nx >= 2**61:
        raise RuntimeError(f"grid of {ny}x{nx} corners with {int(g.max()) + 1} groups is too large to key")
    return (g.astype(np.int64) * ny + y.astype(np.int64)) * nx + x.astype(np.int64)


def _link(el: _Elements) -> tuple[np.ndarray, np.ndarray]:
    """Each element's successor (the one starting at its end, same group) and the heading
    arriving at its start. Where two elements leave a corner (the group touches itself
    diagonally), the ring turns around the pixel outside the group, as ``trace`` does."""
    m = len(el.group)
    both = _point_key(
        np.concatenate((el.group, el.group)), np.concatenate((el.sy, el.ey)), np.concatenate((el.sx, el.ex))
    )
    skey, ekey = both[:m], both[m:]
    order = np.argsort(skey, kind="stable")
    sorted_keys = skey[order]
    lo = np.searchsorted(sorted_keys, ekey, side="left")
    hi = np.searchsorted(sorted_keys, ekey, side="right")
    if np.any((hi - lo < 1) | (hi - lo > 2)):
        raise RuntimeError("merged outlines are not closed rings; the parts are not pixel-aligned")
    succ = order[lo]
    two = np.flatnonzero(hi - lo == 2)
    if len(two):
        alt = order[lo[two] + 1]
        step_in, step_a = _STEP[el.h1[two]], _STEP[el.h0[succ[two]]]
        cross = step_in[:, 0] * step_a[:, 1] - step_in[:, 1] * step_a[:, 0]
        succ[two] = np.where(cross < 0, succ[two], alt)
    pred = np.empty_like(succ)
    pred[succ] = np.arange(m)
    return succ, el.h1[pred]


def _cycles(succ: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Cycle id and position (from the cycle's smallest element) of each element; cycle count."""
    if len(succ) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    ring, pos, length = _rank(succ, np.ones(len(succ), dtype=bool))
    return ring, pos, len(length)


def _expand(
    parts: Outlines,
    el: _Elements,
    ring: np.ndarray,
    pos: np.ndarray,
    keep_start: np.ndarray,
    n_groups: int,
) -> Outlines:
    """The element rings as ragged polygons: shell first per group, vertices expanded in batches."""
    n_rings = int(ring.max()) + 1 if len(ring) else 0
    area2 = np.bincount(ring, weights=el.area2, minlength=n_rings)
    ring_owner = np.empty(n_rings, dtype=np.int64)
    ring_owner[ring] = el.group
    hole = area2 < 0
    if np.bincount(ring_owner[~hole], minlength=n_groups).max(initial=0) > 1 or (~hole).sum() != n_groups:
        raise RuntimeError("merged outlines do not give one shell per group; each group must be 4-connected")
    order = np.lexsort((hole, ring_owner))
    rank = np.empty_like(order)
    rank[order] = np.arange(n_rings)
    emit = el.count - (~keep_start)  # a collinear start vertex (on a seam) is dropped
    seq = np.lexsort((pos, rank[ring]))  # the elements in output order
    out_ring = rank[ring[seq]]
    ring_len = np.bincount(out_ring, weights=emit[seq], minlength=n_rings).astype(np.int64)
    closed = _offsets(ring_len + 1)
    dst = _offsets(emit[seq])[:-1] + out_ring  # each element's first output vertex
    # In the pieces' own dtype (int32 pixel corners): half the bytes of float64 while the
    # dissolved seams wait to be mapped to map coordinates (Outlines.polygons makes that copy).
    xs, ys = np.empty(int(closed[-1]), parts.x.dtype), np.empty(int(closed[-1]), parts.y.dtype)
    units = el.length[seq] == 0
    u = seq[units & (emit[seq] > 0)]
    xs[dst[units & (emit[seq] > 0)]], ys[dst[units & (emit[seq] > 0)]] = el.sx[u], el.sy[u]
    ranges = np.flatnonzero(~units)
    skip = (~keep_start[seq[ranges]]).astype(np.int64)
    done = np.cumsum(emit[seq[ranges]])
    lo = 0
    while lo < len(ranges):
        hi = int(np.searchsorted(done, done[lo] - emit[seq[ranges[lo]]] + BATCH, side="right"))
        hi = max(hi, lo + 1)
        _copy_ranges(parts, el, seq[ranges[lo:hi]], dst[ranges[lo:hi]], skip[lo:hi], emit, xs, ys)
        lo = hi
    xs[closed[1:] - 1], ys[closed[1:] - 1] = xs[closed[:-1]], ys[closed[:-1]]
    return Outlines(xs, ys, closed, _offsets(np.bincount(ring_owner, minlength=n_groups)))


def _copy_ranges(
    parts: Outlines,
    el: _Elements,
    e: np.ndarray,
    dst: np.ndarray,
    skip: np.ndarray,
    emit: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
) -> None:
    """Copy the vertex ranges of chains/loops ``e`` (cyclic in their input ring) to ``dst``."""
    n = emit[e]
    rep = np.repeat(np.arange(len(e)), n)
    j = np.arange(len(rep)) - np.repeat(_offsets(n)[:-1], n)
    k = e[rep]
    src = el.first[k] - el.base[k] + skip[rep] + j
    src %= el.length[k]
    src += el.base[k]
    at = dst[rep] + j
    xs[at], ys[at] = parts.x[src], parts.y[src]
