"""Overlap-tile plans: cores that partition a grid exactly, each read with a halo.

The U-Net paper's overlap-tile strategy: the network sees the core of a tile plus
a halo of context on every side; only the core's prediction is kept. Cores are laid
on a regular lattice of ``size`` pixels from the grid origin, so they partition the
grid exactly (the last row/column of cores is clipped at the grid edge). Every read
window has the same shape, ``size + 2*halo`` square, so tiles batch together; where it
leaves the grid the reader mirror-pads (see :mod:`geounet.read`).

Read-window origins sit at ``core - halo``; with ``size`` and ``halo`` multiples of
``align`` (the U-Net's total down-sampling factor 2**depth), every read window starts
on the same pooling lattice as the whole image, which is what makes the tiled
prediction equal the whole-image prediction.

The plan is given by ``tile``, the side of the window the network sees (the U-Net
paper's "input tile"), and ``halo``; the core is ``tile - 2*halo``.

Example:
    >>> plan = grid((100, 70), tile=64, halo=16)
    >>> len(plan), plan.n_rows, plan.n_cols
    (12, 4, 3)
    >>> t = plan[0]
    >>> t.core, t.read
    (Window(row=0, col=0, height=32, width=32), Window(row=-16, col=-16, height=64, width=64))
    >>> t.padding
    Padding(top=16, bottom=0, left=16, right=0)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from geounet.errors import ConfigError
from geounet.geo import Window


@dataclass(frozen=True, slots=True)
class Padding:
    """Pixels of a read window that lie outside the grid, per side."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def any(self) -> bool:
        """True when the read window leaves the grid on some side."""
        return bool(self.top or self.bottom or self.left or self.right)


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile: its lattice index, its core (kept) and read (core + halo) windows.

    ``core`` lies inside the grid; ``read`` may reach past it by ``padding``.
    """

    index: int
    row: int
    col: int
    core: Window
    read: Window
    padding: Padding

    @property
    def core_in_read(self) -> Window:
        """The core window in the read window's own coordinates (to crop predictions)."""
        return self.core.relative_to(self.read)


@dataclass(frozen=True, slots=True)
class TileGrid:
    """The tile plan of one grid: shape, tile core size, halo and alignment."""

    shape: tuple[int, int]
    size: int
    halo: int
    align: int = 1

    @property
    def n_rows(self) -> int:
        """Tiles down the grid."""
        return -(-self.shape[0] // self.size)

    @property
    def n_cols(self) -> int:
        """Tiles across the grid."""
        return -(-self.shape[1] // self.size)

    @property
    def read_size(self) -> int:
        """Side of every read window (core size + 2 * halo)."""
        return self.size + 2 * self.halo

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def __getitem__(self, index: int) -> Tile:
        if not 0 <= index < len(self):
            raise IndexError(f"tile index {index} out of range 0..{len(self) - 1}")
        i, j = divmod(index, self.n_cols)
        r0, c0 = i * self.size, j * self.size
        core = Window(r0, c0, min(self.size, self.shape[0] - r0), min(self.size, self.shape[1] - c0))
        read = Window(r0 - self.halo, c0 - self.halo, self.read_size, self.read_size)
        pad = Padding(
            top=max(-read.row, 0),
            bottom=max(read.row_stop - self.shape[0], 0),
            left=max(-read.col, 0),
            right=max(read.col_stop - self.shape[1], 0),
        )
        return Tile(index=index, row=i, col=j, core=core, read=read, padding=pad)

    def __iter__(self) -> Iterator[Tile]:
        return (self[k] for k in range(len(self)))

    def intersecting(self, window: Window) -> list[Tile]:
        """Tiles whose core shares a pixel with ``window`` (e.g. a block being vectorized)."""
        i0, i1 = max(window.row // self.size, 0), min((window.row_stop - 1) // self.size, self.n_rows - 1)
        j0, j1 = max(window.col // self.size, 0), min((window.col_stop - 1) // self.size, self.n_cols - 1)
        return [self[i * self.n_cols + j] for i in range(i0, i1 + 1) for j in range(j0, j1 + 1)]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


#: How users name the tile and halo of a prediction: the CLI flags and the config keys.
PREDICT_NAMES = ("--tile / predict.tile", "--halo / predict.halo")


def tile_halo_problem(
    tile: int, halo: int, *, align: int = 1, names: tuple[str, str] = PREDICT_NAMES
) -> str | None:
    """Why ``tile``/``halo`` cannot plan tiles (``None`` when they can), naming them as ``names``.

    The one check of a tile plan's size: the halo is >= 0, the tile is larger than twice
    the halo (else the core is empty) and both are multiples of ``align``. ``names`` are
    the user's names of the two values (a bundle's, a training recipe's, a prediction's).

    Example:
        >>> tile_halo_problem(256, 128, align=16, names=("model.tile", "model.halo"))
        'tile=256 must be > 2*halo=256 (the core would be empty); raise model.tile to at least 272 or lower model.halo'
        >>> tile_halo_problem(256, 64, align=16) is None
        True
    """
    tile_name, halo_name = names
    if align < 1:
        return f"align={align} must be >= 1; pass the model's down-sampling factor (2**depth)"
    if halo < 0:
        return f"halo={halo} must be >= 0; set {halo_name} to the model's receptive-field radius or more"
    if tile <= 2 * halo:
        return (
            f"tile={tile} must be > 2*halo={2 * halo} (the core would be empty); "
            f"raise {tile_name} to at least {_round_up(2 * halo + align, align)} or lower {halo_name}"
        )
    for what, name, value in (("tile", tile_name, tile), ("halo", halo_name, halo)):
        if value % align:
            lower, upper = value // align * align, _round_up(value, align)
            return (
                f"{what}={value} must be a multiple of the model's down-sampling factor {align}; "
                f"set {name} to {lower if lower else upper} or {upper}"
            )
    return None


def grid(shape: tuple[int, int], *, tile: int, halo: int, align: int = 1, shrink: bool = True) -> TileGrid:
    """Plan the tiles of a (rows, cols) grid.

    Args:
        shape: grid shape (rows, cols).
        tile: side of the read window the network sees (core + 2*halo); a multiple of ``align``.
        halo: context added on every side of the core; a multiple of ``align``.
        align: the model's total down-sampling factor (2**depth for a U-Net).
        shrink: for grids smaller than one core, shrink the core to the grid
            (rounded up to ``align``) instead of predicting mostly padding.

    Raises:
        ConfigError: on a tile not larger than twice the halo, a negative halo or a
            misaligned value (:func:`tile_halo_problem`); the message names the value,
            the flag and config key, and a valid choice.

    Example:
        >>> grid((1000, 1000), tile=384, halo=64, align=16).size
        256
        >>> grid((40, 30), tile=512, halo=16, align=16).read_size
        80
    """
    problem = tile_halo_problem(tile, halo, align=align)
    if problem:
        raise ConfigError(problem)
    if shape[0] < 1 or shape[1] < 1:
        raise ConfigError(f"grid shape={shape} must be positive in both axes; check the input raster")
    size = tile - 2 * halo
    if shrink:
        size = min(size, _round_up(max(shape), align))
    return TileGrid(shape=(int(shape[0]), int(shape[1])), size=size, halo=halo, align=align)
