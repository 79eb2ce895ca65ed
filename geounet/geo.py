"""Georeferenced pixel grids and windows: small frozen value types, no I/O.

A :class:`Grid` is the target raster of a job: its shape (rows, cols), the affine
transform from pixel (col, row) to map (x, y), and its CRS (a WKT or ``EPSG:n``
string, or ``None`` for photos that carry no georeferencing). A :class:`Window`
is a rectangle of pixels in (row, col) order; it may reach past the grid, which
is how tiles describe their halo.

Example:
    >>> from affine import Affine
    >>> g = Grid(shape=(100, 200), transform=Affine(10, 0, 500000, 0, -10, 5800000), crs="EPSG:32633")
    >>> g.window_grid(Window(row=10, col=20, height=5, width=5)).transform.c
    500200.0
    >>> g.bounds
    (500000.0, 5799000.0, 502000.0, 5800000.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from affine import Affine

from geounet.errors import InputError

_IDENTITY = Affine.identity()


@dataclass(frozen=True, slots=True)
class Window:
    """A pixel rectangle: top-left (row, col) and size; may lie partly outside a grid.

    Example:
        >>> Window(row=-2, col=3, height=4, width=4).clip(10, 10)
        Window(row=0, col=3, height=2, width=4)
    """

    row: int
    col: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        """One past the last row."""
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        """One past the last column."""
        return self.col + self.width

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)

    @property
    def size(self) -> int:
        """Number of pixels."""
        return self.height * self.width

    def to_slices(self) -> tuple[slice, slice]:
        """(row slice, col slice) for indexing an array laid out like the grid."""
        return (slice(self.row, self.row_stop), slice(self.col, self.col_stop))

    def clip(self, rows: int, cols: int) -> Window:
        """The part of this window inside a (rows, cols) grid (may be empty: size 0)."""
        r0, c0 = max(self.row, 0), max(self.col, 0)
        r1, c1 = min(self.row_stop, rows), min(self.col_stop, cols)
        return Window(row=r0, col=c0, height=max(r1 - r0, 0), width=max(c1 - c0, 0))

    def relative_to(self, outer: Window) -> Window:
        """This window in the coordinates of ``outer`` (whose origin becomes (0, 0))."""
        return Window(self.row - outer.row, self.col - outer.col, self.height, self.width)

    def intersects(self, other: Window) -> bool:
        """True when the two windows share at least one pixel (never for an empty window).

        Example:
            >>> Window(0, 0, 1, 2).intersects(Window(0, 1, 1, 0))
            False
        """
        return (
            self.size > 0
            and other.size > 0
            and self.row < other.row_stop
            and other.row < self.row_stop
            and self.col < other.col_stop
            and other.col < self.col_stop
        )


@dataclass(frozen=True, slots=True)
class Grid:
    """A georeferenced pixel grid: shape (rows, cols), affine transform, CRS.

    The transform maps pixel corner (col, row) to map (x, y), as in GDAL/rasterio.
    Operations return new grids; the type holds no pixels.
    """

    shape: tuple[int, int]
    transform: Affine = _IDENTITY
    crs: str | None = None

    def __post_init__(self) -> None:
        rows, cols = self.shape
        if rows <= 0 or cols <= 0:
            raise InputError(
                f"grid shape={self.shape} must be positive in both axes; "
                "check the input raster or the AOI/resolution"
            )
        if self.transform.is_degenerate:
            raise InputError(
                f"grid transform={tuple(self.transform)[:6]} is degenerate; fix the georeferencing"
            )

    @property
    def rows(self) -> int:
        """Number of rows (height)."""
        return self.shape[0]

    @property
    def cols(self) -> int:
        """Number of columns (width)."""
        return self.shape[1]

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size (x, y) in map units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in map units² (|determinant| of the transform)."""
        return abs(self.transform.determinant)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in map units, for north-up or rotated grids."""
        xs, ys = [], []
        for c, r in ((0, 0), (self.cols, 0), (0, self.rows), (self.cols, self.rows)):
            x, y = self.transform @ (c, r)
            xs.append(x)
            ys.append(y)
        return (min(xs), min(ys), max(xs), max(ys))

    @property
    def is_georeferenced(self) -> bool:
        """False for photos: no CRS, identity transform."""
        return self.crs is not None

    @classmethod
    def of_dataset(cls, dataset: Any) -> Grid:
        """The pixel grid of an open raster (a rasterio dataset: ``height``, ``width``, ``transform``, ``crs``).

        No I/O here: the dataset is already open. Photos without a CRS get ``crs=None``.
        """
        crs = dataset.crs.to_string() if dataset.crs else None
        return cls(shape=(int(dataset.height), int(dataset.width)), transform=dataset.transform, crs=crs)

    def window_grid(self, window: Window) -> Grid:
        """The grid of ``window`` (which may reach past this grid): same CRS, shifted transform."""
        transform = self.transform @ Affine.translation(window.col, window.row)
        return Grid(shape=window.shape, transform=transform, crs=self.crs)

    def full_window(self) -> Window:
        """The window covering the whole grid."""
        return Window(0, 0, self.rows, self.cols)

    def xy(self, row: float, col: float) -> tuple[float, float]:
        """Map coordinates (x, y) of a pixel position (row, col); +0.5 gives pixel centres."""
        x, y = self.transform @ (col, row)
        return (float(x), float(y))

    def rowcol(self, x: float, y: float) -> tuple[float, float]:
        """Fractional pixel position (row, col) of map coordinates (x, y)."""
        col, row = ~self.transform @ (x, y)
        return (float(row), float(col))


def utm_crs(lon: float, lat: float) -> str:
    """The WGS 84 UTM zone (``EPSG:326nn`` north, ``EPSG:327nn`` south) holding (lon, lat).

    The default CRS of a job's target grid is the UTM zone of its AOI's centroid.

    Example:
        >>> utm_crs(12.6, 52.4), utm_crs(-77.7, -24.5)
        ('EPSG:32633', 'EPSG:32718')
    """
    from odc.geo.crs import CRS  # lazy: keeps `import geounet.geo` light

    return str(CRS.utm(lon, lat))


def from_bounds(bounds: tuple[float, float, float, float], *, crs: str, resolution: float) -> Grid:
    """The north-up grid of square ``resolution`` pixels covering map ``bounds`` (left, bottom, right, top).

    Pixel edges snap outward to multiples of ``resolution`` (as odc-geo's ``GeoBox.from_bbox``
    does), so grids of neighbouring AOIs at one resolution share a pixel lattice.

    Raises:
        InputError: on a non-positive resolution or empty bounds.

    Example:
        >>> g = from_bounds((330001.0, 5814359.0, 345360.0, 5822041.0), crs="EPSG:32633", resolution=10)
        >>> g.shape, g.transform.c, g.transform.f
        ((770, 1536), 330000.0, 5822050.0)
    """
    left, bottom, right, top = bounds
    if not resolution > 0 or not (right > left and top > bottom):
        raise InputError(
            f"grid bounds={bounds} at resolution={resolution} are empty; give left<right, bottom<top "
            "and a positive resolution"
        )
    from odc.geo.geobox import GeoBox  # lazy: keeps `import geounet.geo` light

    box = GeoBox.from_bbox(bounds, crs, resolution=resolution)
    shape = (int(box.shape.y), int(box.shape.x))
    return Grid(shape=shape, transform=Affine(*box.affine[:6]), crs=str(box.crs))
