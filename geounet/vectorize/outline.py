"""Outlines of pixel regions as polygon rings, traced with whole-array operations (no per-polygon loop).

Pure math, no I/O. :func:`trace` turns a label image (4-connected regions 1..n, 0 = none)
into one polygon per label: closed rings through the *turning* pixel corners only (no
collinear vertices), the shell first, in pixel coordinates (x = column, y = row). The same
vertices as GDAL's polygonize (``rasterio.features.shapes``), but the whole raster at once:

1. Every pixel corner sees four pixels (NW, NE, SW, SE). A region's boundary turns there
   when they say so; each turn is an *event* with the direction the ring leaves in, found
   by comparing the four shifted label arrays.
2. Along one row of corners, the rings' eastward runs start and end alternately (each run
   ends before the next begins), so the k-th start of a row-major scan pairs with the k-th
   end: each event's successor is found by sorting nothing. Likewise westward, and
   column-major for north/south.
3. The successor permutation splits into cycles (rings, via scipy's connected components);
   pointer jumping ranks the vertices in each ring; the signed area says shell or hole.

Where a region touches itself only at a corner (two diagonal pixels), its rings turn around
the *other* two pixels, so a hole touching its shell at a point stays a separate ring and
the polygon is valid (OGC/GEOS rules). Rings run with the region on their left in (x, y)
pixel coordinates, so shells have positive signed area there.

:func:`geounet.vectorize.join.merge` dissolves polygons of such outlines that share edges
(the pieces a block grid cut) into one polygon per group, with the same ring rules.

Example:
    >>> import numpy as np
    >>> o = trace(np.array([[1, 1], [0, 1]], dtype=np.int32), 1)
    >>> np.column_stack((o.x, o.y)).astype(int).tolist()
    [[0, 0], [2, 0], [2, 2], [1, 2], [1, 1], [0, 1], [0, 0]]
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

E, S, W, N = 0, 1, 2, 3  # directions a ring leaves a corner in (y grows downwards, with the rows)


@dataclass(frozen=True)
class Outlines:
    """Polygons as ragged arrays (like ``shapely.to_ragged_array``): closed rings, shell first.

    ``x``/``y`` hold the vertices; ring ``r`` is ``ring_offsets[r]:ring_offsets[r + 1]``
    (its last vertex repeats the first) and polygon ``p`` has the rings
    ``poly_offsets[p]:poly_offsets[p + 1]``.
    """

    x: np.ndarray
    y: np.ndarray
    ring_offsets: np.ndarray
    poly_offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.poly_offsets) - 1

    @classmethod
    def concat(cls, items: Sequence[Outlines]) -> Outlines:
        """The polygons of several outlines, in order, in one (vertex dtypes promoted together)."""
        if not items:
            return cls(np.zeros(0), np.zeros(0), np.zeros(1, np.int64), np.zeros(1, np.int64))
        vertices = _offsets(np.array([len(o.x) for o in items]))
        rings = _offsets(np.array([len(o.ring_offsets) - 1 for o in items]))
        return cls(
            x=np.concatenate([o.x for o in items]),
            y=np.concatenate([o.y for o in items]),
            ring_offsets=np.concatenate(
                [[0]] + [o.ring_offsets[1:] + v for o, v in zip(items, vertices[:-1], strict=True)]
            ),
            poly_offsets=np.concatenate(
                [[0]] + [o.poly_offsets[1:] + r for o, r in zip(items, rings[:-1], strict=True)]
            ),
        )

    def shifted(self, col: int, row: int) -> Outlines:
        """The vertices moved by whole pixels, stored compactly (int32 where they fit): pieces that
        wait for the seam dissolve take 8 bytes a vertex instead of a GEOS geometry's 16 and more."""
        x, y = self.x.astype(np.int64) + col, self.y.astype(np.int64) + row
        small = len(x) == 0 or max(int(x.max()), int(y.max())) < 2**31
        dtype = np.int32 if small else np.int64
        return Outlines(x.astype(dtype), y.astype(dtype), self.ring_offsets, self.poly_offsets)

    def take(self, index: np.ndarray) -> Outlines:
        """The polygons at ``index``: a boolean mask, or integer indices in ascending order."""
        index = np.asarray(index)
        if index.dtype == bool:
            return self.select(index)
        if len(index) > 1 and np.any(np.diff(index) <= 0):
            raise ValueError("Outlines.take needs ascending indices (or a boolean mask)")
        keep = np.zeros(len(self), dtype=bool)
        keep[index] = True
        return self.select(keep)

    def select(self, keep: np.ndarray) -> Outlines:
        """The polygons where the boolean mask ``keep`` is True, in order."""
        rings_per_poly = np.diff(self.poly_offsets)
        ring_keep = np.repeat(keep, rings_per_poly)
        ring_len = np.diff(self.ring_offsets)
        vertex_keep = np.repeat(ring_keep, ring_len)
        return Outlines(
            x=self.x[vertex_keep],
            y=self.y[vertex_keep],
            ring_offsets=_offsets(ring_len[ring_keep]),
            poly_offsets=_offsets(rings_per_poly[keep]),
        )

    def polygons(self, transform: Affine | None = None, *, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
        """The shapely polygons (object array): vertices moved by the integer ``offset``
        (columns, rows; exact in floating point), then mapped by ``transform`` if given.

        Offsetting first makes a vertex's map coordinate depend on its position in the whole
        grid only, not on the block it was traced in: blocks of any size give bit-identical
        coordinates (a composed ``transform @ translation`` would round differently per block).
        """
        if len(self) == 0:
            return np.empty(0, dtype=object)
        plain = offset == (0, 0) and (transform is None or transform == Affine.identity())
        if plain and _columns_of(self.x, self.y) is not None:
            xy = _columns_of(self.x, self.y)  # x and y are the columns of one (n, 2) array: no copy
        elif transform is None or transform.b == transform.d == 0:
            xy = self._mapped_in_place(transform, offset)
        else:  # a rotated or sheared grid
            x, y = self.x + offset[0], self.y + offset[1]
            a, b, c, d, e, f = transform[:6]
            xy = np.column_stack((a * x + b * y + c, d * x + e * y + f)).astype(np.float64, copy=False)
        with _no_cyclic_gc():
            geoms = shapely.from_ragged_array(
                shapely.GeometryType.POLYGON, xy, (self.ring_offsets, self.poly_offsets)
            )
        return np.asarray(geoms, dtype=object)

    def _mapped_in_place(self, transform: Affine | None, offset: tuple[int, int]) -> np.ndarray:
        """(n, 2) float64 map coordinates for a north-up ``transform`` (no rotation terms), computed
        in the output array: no temporaries, where the general formula makes five (the dissolved
        seams of a 6000² scene hold 7 M vertices, 56 MB per temporary). The same values:
        ``a * x + 0 * y + c`` is ``a * x + c`` for finite coordinates."""
        xy = np.empty((len(self.x), 2))
        xs, ys = xy[:, 0], xy[:, 1]
        np.add(self.x, offset[0], out=xs, casting="unsafe")
        np.add(self.y, offset[1], out=ys, casting="unsafe")
        if transform is not None:
            xs *= transform.a
            xs += transform.c
            ys *= transform.e
            ys += transform.f
        return xy


def trace(labels: np.ndarray, n: int) -> Outlines:
    """One polygon per label 1..n (in label order) of a 2-D int label image; 0 is outside all.

    Each label must be one 4-connected region (as ``scipy.ndimage.label`` gives).
    """
    p = np.pad(labels, 1)
    a, b, c, d = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]  # NW, NE, SW, SE of each corner
    code = np.zeros(a.shape, dtype=np.uint8)  # which of the four pixels are equal, 6 bits
    for bit, (u, v) in enumerate(((a, b), (a, c), (a, d), (b, c), (b, d), (c, d))):
        code |= (u == v).view(np.uint8) << bit
    events = _EVENTS[code]
    corner = np.flatnonzero(events)  # corners where some ring turns, row-major
    code, events = code.ravel()[corner], events.ravel()[corner]
    cols, step = labels.shape[1] + 1, labels.shape[1] + 2
    nw = corner + corner // cols  # index of the corner's NW pixel in the padded labels
    pp = p.ravel()
    quad = {k: pp[nw + off] for k, off in (("a", 0), ("b", 1), ("c", step), ("d", step + 1))}
    by_column = _by_column(events, corner, cols, a.shape)
    # Leaving east along the edge above SE (owned by SE), south along the edge right of SW,
    # west along the edge below NW, north along the edge left of NE; a ring's arrival
    # heading E/S/W/N is owned by SW, NW, NE, SE. Rings of label 0 (outside) are dropped.
    leave = [np.flatnonzero(((events & (1 << h)) != 0) & (quad[q] != 0)) for h, q in enumerate("dcab")]
    first = _offsets(np.array([len(ix) for ix in leave]))
    event_id = np.empty((4, len(corner)), dtype=np.int64)
    for h, ix in enumerate(leave):
        event_id[h, ix] = np.arange(first[h], first[h + 1])
    succ = np.empty(int(first[-1]), dtype=np.int64)
    for h, (owner_q, turn_bit, yes, no) in enumerate(_ARRIVE):
        # In scan order a line's runs alternate start, end (E, S) or end, start (W, N): pairs zip.
        order = by_column if h in (S, N) else np.arange(len(corner))
        ev = events[order]
        starts = order[((ev & (1 << h)) != 0) & (quad["dcab"[h]][order] != 0)]
        ends = order[((ev & (16 << h)) != 0) & (quad[owner_q][order] != 0)]
        turn = np.where(code[ends] & (1 << turn_bit), yes, no)
        succ[event_id[h, starts]] = event_id[turn, ends]
    ix = np.concatenate(leave)
    # Every ring's top-left vertex is a convex corner from N to E (shells) or a concave one
    # from W to S (holes): those anchor the ring ranking (at least one per ring).
    anchor = np.concatenate(
        (
            code[leave[E]] & (1 << _AD) == 0,
            code[leave[S]] & (1 << _BC) != 0,
            np.zeros(len(leave[W]) + len(leave[N]), dtype=bool),
        )
    )
    owner = np.concatenate([quad[q][leave[h]] for h, q in enumerate("dcab")])
    y = corner[ix] // cols
    x = corner[ix] - y * cols
    return assemble(x.astype(np.float64), y.astype(np.float64), succ, owner - 1, n, anchor)


def assemble(
    x: np.ndarray,
    y: np.ndarray,
    succ: np.ndarray,
    owner: np.ndarray,
    n: int,
    anchor: np.ndarray,
    keep: np.ndarray | None = None,
) -> Outlines:
    """Ring vertices linked by ``succ`` (a permutation) → ragged polygons, one per owner 0..n-1.

    ``owner`` is each vertex's polygon; ``anchor`` marks vertices of which every ring has
    at least one (for the ranking); ``keep`` drops vertices (e.g. collinear ones) after
    the rings are ordered. Rings with positive signed area are shells (one per owner).
    """
    if len(succ) == 0:
        return Outlines(np.zeros(0), np.zeros(0), np.zeros(1, np.int64), np.zeros(n + 1, np.int64))
    if keep is None:  # traced rings alternate horizontal and vertical moves: rank half of them
        ring, pos, length = _rank_alternating(succ, anchor, y[succ] == y)
    else:
        ring, pos, length = _rank(succ, anchor)
    area2 = np.bincount(ring, weights=x * y[succ] - x[succ] * y)
    ring_owner = np.empty(len(length), dtype=np.int64)
    ring_owner[ring] = owner
    hole = area2 < 0
    if np.bincount(ring_owner[~hole], minlength=n).max(initial=0) > 1 or (~hole).sum() != n:
        raise RuntimeError("traced outlines do not give one shell per region; labels must be 4-connected")
    order = np.lexsort((hole, ring_owner))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    ring_start = _offsets(length[order])
    seq = np.empty(len(succ), dtype=np.int64)
    seq[ring_start[rank[ring]] + pos] = np.arange(len(succ))  # vertices in output order
    ring_len = length[order]
    if keep is not None:
        seq = seq[keep[seq]]
        ring_len = np.bincount(rank[ring[seq]], minlength=len(order))
    closed = _offsets(ring_len + 1)
    idx = np.arange(len(seq)) + np.repeat(np.arange(len(ring_len)), ring_len)
    xs, ys = np.empty(int(closed[-1])), np.empty(int(closed[-1]))
    xs[idx], ys[idx] = x[seq], y[seq]
    firsts = seq[closed[:-1] - np.arange(len(ring_len))]
    xs[closed[1:] - 1], ys[closed[1:] - 1] = x[firsts], y[firsts]
    return Outlines(xs, ys, closed, _offsets(np.bincount(ring_owner, minlength=n)))


# -- internals ---------------------------------------------------------------------------

_AB, _AC, _AD, _BC, _BD, _CD = range(6)  # bits of the corner code: which pixels are equal


def _event_table() -> np.ndarray:
    """Corner code (6 equality bits) → events: bits 0-3 leave E/S/W/N, bits 4-7 arrive E/S/W/N.

    A ring leaves along an edge its owner borders unless it runs straight on; it arrives
    along an edge likewise (see :func:`trace` for who owns which edge).
    """
    code = np.arange(64)
    ab, ac, ad, bc, bd, cd = ((code >> k) & 1 == 1 for k in range(6))
    del ad, bc  # (they only choose where a ring turns, see _ARRIVE)
    bits = (
        ~bd & ~(cd & ~ac),  # leave E (owner SE)
        ~cd & ~(ac & ~ab),  # leave S (owner SW)
        ~ac & ~(ab & ~bd),  # leave W (owner NW)
        ~ab & ~(bd & ~cd),  # leave N (owner NE)
        ~ac & ~(cd & ~bd),  # arrive E (owner SW)
        ~ab & ~(ac & ~cd),  # arrive S (owner NW)
        ~bd & ~(ab & ~ac),  # arrive W (owner NE)
        ~cd & ~(bd & ~ab),  # arrive N (owner SE)
    )
    return sum((m.astype(np.uint8) << k for k, m in enumerate(bits)), np.zeros(64, np.uint8))


_EVENTS = _event_table()
#: Per arrival heading: its owner, and the turn there: to ``yes`` when the code bit is set
#: (a concave corner, around the other pixel), else to ``no`` (around the owner's pixel).
_ARRIVE = (("c", _BC, N, S), ("a", _AD, E, W), ("b", _BC, S, N), ("d", _AD, W, E))


def _by_column(events: np.ndarray, corner: np.ndarray, cols: int, shape: tuple[int, int]) -> np.ndarray:
    """The event corners' positions in ``corner`` (row-major), in column-major order."""
    grid = np.zeros(shape, dtype=bool)
    grid.ravel()[corner] = True
    c, r = np.nonzero(grid.T)
    position = np.empty(grid.size, dtype=np.int64)
    position[corner] = np.arange(len(corner))
    out: np.ndarray = position[r.astype(np.int64) * cols + c]
    return out


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while creating many geometry objects.

    Every 700 new objects it would run, and its older generations scan every live object:
    that was 60 % of the time spent creating 135k polygons. Geometries hold no reference
    cycles, so nothing is left for it; its previous state is restored afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _columns_of(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """The C-contiguous (n, 2) float64 array whose columns ``x`` and ``y`` are, if they are."""
    xy = x.base
    if not isinstance(xy, np.ndarray) or y.base is not xy or xy.shape != (len(x), 2):
        return None
    if xy.dtype != np.float64 or not xy.flags.c_contiguous:
        return None
    if x.ctypes.data != xy.ctypes.data or y.ctypes.data != xy.ctypes.data + xy.itemsize:
        return None
    return xy


def _offsets(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _rank(
    succ: np.ndarray, anchor: np.ndarray, spacing: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cycle id, position in its cycle (from an anchor) and the cycle lengths of a permutation.

    List ranking with a ruling set: the rulers (``anchor``, at least one per cycle, and
    every ``spacing``-th element) all walk at once to the next ruler, so each element is
    visited once; then only the rulers' cycles are found (scipy's connected components)
    and ranked by pointer jumping (O(log length) rounds).
    """
    n = len(succ)
    is_ruler = anchor.copy()
    is_ruler[::spacing] = True
    rulers = np.flatnonzero(is_ruler)
    m = len(rulers)
    ruler_of = np.empty(n, dtype=np.int64)  # the ruler each element's walk came from
    ruler_of[rulers] = np.arange(m)
    offset = np.zeros(n, dtype=np.int64)  # steps from that ruler
    next_ruler, gap = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
    cur, walker, step = rulers, np.arange(m), 0
    while len(cur):
        step += 1
        nxt = succ[cur]
        stop = is_ruler[nxt]
        next_ruler[walker[stop]] = ruler_of[nxt[stop]]
        gap[walker[stop]] = step
        cur, walker = nxt[~stop], walker[~stop]
        ruler_of[cur] = walker
        offset[cur] = step
    graph = csr_matrix((np.ones(m, dtype=np.int8), next_ruler, np.arange(m + 1)), shape=(m, m))
    n_rings, ruler_ring = connected_components(graph, directed=True, connection="weak")
    length = np.bincount(ruler_ring, weights=gap, minlength=n_rings).astype(np.int64)
    head = np.full(n_rings, m, dtype=np.int64)
    np.minimum.at(head, ruler_ring, np.arange(m))
    # Weighted pointer jumping over the rulers: distance to the ruler before the head.
    pred = np.empty(m, dtype=np.int64)
    pred[next_ruler] = np.arange(m)
    tail = pred[head]
    nxt_r, dist = next_ruler.copy(), gap.copy()
    nxt_r[tail], dist[tail] = tail, 0
    active = np.flatnonzero(nxt_r[nxt_r] != nxt_r)
    while len(active):
        hop = nxt_r[active]
        dist[active] += dist[hop]
        nxt_r[active] = nxt_r[hop]
        active = active[nxt_r[nxt_r[active]] != nxt_r[active]]
    ruler_pos = dist[head[ruler_ring]] - dist
    return ruler_ring[ruler_of], ruler_pos[ruler_of] + offset, length


def _rank_alternating(
    succ: np.ndarray, anchor: np.ndarray, horizontal: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_rank` for rings whose moves alternate horizontal and vertical: ranks only the
    vertices that leave horizontally (every other one) and places the rest after them."""
    h = np.flatnonzero(horizontal)
    v = succ[h]
    compact = np.empty(len(succ), dtype=np.int64)
    compact[h] = np.arange(len(h))
    ring_h, pos_h, length_h = _rank(compact[succ[v]], anchor[h] | anchor[v])
    ring, pos = np.empty(len(succ), dtype=np.int64), np.empty(len(succ), dtype=np.int64)
    ring[h], ring[v] = ring_h, ring_h
    pos[h], pos[v] = 2 * pos_h, 2 * pos_h + 1
    return ring, pos, 2 * length_h
