"""The tile plan from a memory budget: exact seams at close to whole-image cost.

Exactness needs a halo of at least the receptive-field radius on every side of a core
(107 px for a depth-4 U-Net), so a tile of side ``t`` computes ``(t / (t - 2*halo))**2``
network pixels per output pixel: 3.5 for a 480-px tile, 1.2 for a 2272-px one. Larger tiles
cost memory, so the planner takes the largest tile the budget allows, then spreads the
scene evenly over as few tiles as that permits (a 6000-px scene is cut into 3 cores of
2000 px, not 2 of 2688 and a sliver of 624 that costs a whole tile).

Two ways to run a tile, with measured memory models (bytes, float32 on the CPU):

- **plain**: the ordinary forward pass holds about ``19 * width`` bytes per pixel
  (width 16: ~300 B/px, measured with ``ru_maxrss`` at 1024² and 1536²); half that in
  float16/bfloat16 (AMP on a GPU).
- **streamed** (:mod:`geounet.stream`): memory grows with the tile's *width* only,
  ``48 * width * tile * (rows + receptive field)`` bytes (measured: 202 MB at 2048 px,
  width 16, 32-row strips), so tiles of a few thousand pixels fit in a few hundred MB.

On the CPU the plan streams the tiles an ordinary pass cannot hold: on this project's 2-core machine, strips of a 2048-px tile run
at the per-pixel speed of an ordinary 512-px tile (0.59-0.63 vs 0.61 Mpx/s, 1 thread), while
an ordinary pass slows down as tiles grow (its feature maps leave the cache). On a GPU the
plain pass of the largest tile that fits is fastest (bandwidth is plentiful, calls are not).

Example:
    >>> from geounet.model import ModelSpec
    >>> spec = ModelSpec(in_channels=4, n_classes=8, depth=4, width=16)
    >>> p = choose((6000, 6000), spec=spec, halo=112, memory=512 << 20, device="cpu")
    >>> p.tile, p.core, p.n_tiles, p.streamed, round(p.overhead, 3)
    (2224, 2000, 9, True, 1.237)
    >>> g = choose((6000, 6000), spec=spec, halo=112, memory=48 << 30, device="cuda")
    >>> g.tile, g.n_tiles, g.streamed, round(g.overhead, 3)
    (6224, 1, False, 1.076)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from geounet.errors import ConfigError
from geounet.model import ModelSpec, receptive_field

#: Bytes per pixel and first-level channel of an ordinary float32 forward pass (measured).
PLAIN_BYTES = 19.0
#: Bytes per tile column, first-level channel and buffered row of a streamed pass (measured).
STREAM_BYTES = 48.0
#: Rows per streamed strip the memory model assumes (see :func:`geounet.infer.strip_rows`).
STRIP_ROWS = 64
#: A tile forced with ``--tile`` at least this large streams on the CPU.
STREAM_MIN = 1024
#: Largest tile side the planner considers (GDAL reads and uint8 outputs stay small).
MAX_TILE = 8192
_UNITS = {
    "": 1,
    "B": 1,
    "K": 1 << 10,
    "KB": 1 << 10,
    "M": 1 << 20,
    "MB": 1 << 20,
    "G": 1 << 30,
    "GB": 1 << 30,
}


@dataclass(frozen=True, slots=True)
class Plan:
    """A tile plan: tile side (network input), core side, halo, count and cost.

    ``overhead`` is network pixels per output pixel; ``memory`` the estimated bytes one
    batch of tiles needs in the predict stage (input chips, network state, outputs).
    """

    tile: int
    core: int
    halo: int
    n_tiles: int
    overhead: float
    streamed: bool
    batch: int
    memory: int


def parse_memory(text: str | int | None) -> int | None:
    """``4GB``, ``512MB``, ``1.5G`` or a byte count → bytes; ``None``/``auto`` → None (choose).

    Raises:
        ConfigError: on anything else, naming the value.

    Example:
        >>> parse_memory("4GB"), parse_memory("512m"), parse_memory("auto")
        (4294967296, 536870912, None)
    """
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "auto")):
        return None
    if isinstance(text, int):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?[bB]?)\s*", text)
        if not m:
            raise ConfigError(f"--memory {text!r} is not a size; use e.g. 4GB, 512MB or auto")
        value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 64 << 20:
        raise ConfigError(f"--memory {text!r} is below 64 MB; give the predict stage at least 64MB")
    return int(value)


def tile_bytes(spec: ModelSpec, tile: int, *, streamed: bool, amp: bool = False) -> int:
    """Estimated bytes of one tile in the predict stage: chips, network state and outputs.

    Example:
        >>> spec = ModelSpec(in_channels=4, n_classes=8, depth=4, width=16)
        >>> tile_bytes(spec, 1024, streamed=False) // (1 << 20)
        371
    """
    px = tile * tile
    chips = px * spec.in_channels * 4 * 2 + px * 3  # raw + normalized float32, valid mask, outputs
    scale = 0.5 if amp else 1.0
    if streamed:
        rf = receptive_field(spec)
        state = STREAM_BYTES * spec.width * tile * (STRIP_ROWS + rf) * scale
    else:
        state = PLAIN_BYTES * spec.width * px * scale + spec.n_classes * px * 4
    return int(chips + state)


def even_core(length: int, max_core: int, align: int) -> int:
    """The core side that cuts ``length`` px into the fewest near-equal cores of <= ``max_core``.

    Example:
        >>> even_core(6000, 2048, 16), even_core(6000, 6000, 16), even_core(100, 2048, 16)
        (2000, 6000, 112)
    """
    n = max(1, math.ceil(length / max(max_core, align)))
    return -(-math.ceil(length / n) // align) * align


def choose(
    shape: tuple[int, int],
    *,
    spec: ModelSpec,
    halo: int,
    memory: int,
    device: str,
    amp: bool = True,
) -> Plan:
    """The exact plan with the largest tile that fits ``memory`` bytes on ``device`` (cpu/cuda).

    Raises:
        ConfigError: when not even the smallest tile fits the budget.
    """
    align = spec.stride
    cuda = device.startswith("cuda")
    use_amp = amp and cuda
    longest = max(shape)
    best: Plan | None = None
    tile = min(MAX_TILE, -(-(longest + 2 * halo) // align) * align)
    while tile > 2 * halo:
        plain = tile_bytes(spec, tile, streamed=False, amp=use_amp)
        streamed = not cuda and plain > memory
        need = tile_bytes(spec, tile, streamed=True) if streamed else plain
        if need <= memory:
            core = even_core(longest, tile - 2 * halo, align)
            final = core + 2 * halo
            plain_fits = tile_bytes(spec, final, streamed=False, amp=use_amp) <= memory
            streamed = not cuda and not plain_fits
            best = _plan(
                shape, core=core, halo=halo, spec=spec, streamed=streamed, amp=use_amp, memory=memory
            )
            break
        tile -= align
    if best is None:
        raise ConfigError(
            f"--memory {memory >> 20} MB cannot hold one tile of {2 * halo + align} px with halo {halo}; "
            "raise --memory or use a model with a smaller receptive field"
        )
    return best


def _plan(
    shape: tuple[int, int], *, core: int, halo: int, spec: ModelSpec, streamed: bool, amp: bool, memory: int
) -> Plan:
    tile = core + 2 * halo
    n = math.ceil(shape[0] / core) * math.ceil(shape[1] / core)
    one = tile_bytes(spec, tile, streamed=streamed, amp=amp)
    batch = 1 if streamed else max(1, min(16, memory // max(one, 1), n))
    seen = n * tile * tile  # every read window is square (tiles batch together)
    return Plan(
        tile=tile,
        core=core,
        halo=halo,
        n_tiles=n,
        overhead=seen / (shape[0] * shape[1]),
        streamed=streamed,
        batch=batch,
        memory=one * batch,
    )
