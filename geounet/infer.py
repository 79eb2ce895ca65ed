"""Batches of normalized chips → class probabilities (torch only: device, AMP, batching).

:class:`Predictor` loads a bundle's network once (one per process or Ray actor) and
turns float32 ``(B, C, H, W)`` arrays, already normalized with
:func:`geounet.model.normalize`, into softmax probabilities ``(B, K, H, W)``.

BatchNorm is folded into the convolutions once at load, and the network runs in
channels-last memory (on this project's 2-core CPU 1.5-2x faster than the default layout
for U-Net convolutions, and the layout cuDNN's tensor cores want). On a GPU it uses
autocast (bfloat16 where the card supports it, else float16), pinned host memory with
asynchronous copies, and halves the batch on an out-of-memory error. On the CPU it runs
in float32 with at most the caller's torch thread count (the caller, e.g. a Ray actor with a
CPU quota, decides it), one fewer per thread working beside it (:mod:`geounet.cores`). Optional test-time augmentation averages the 8
flips/rotations of each chip.

:meth:`Predictor.predict_rows` runs one tall tile through :mod:`geounet.stream` in strips
of rows instead, so a tile's memory grows with its width, not its area: the planner can
then choose tiles large enough that the halo costs little (see :mod:`geounet.budget`).

Example:
    >>> import numpy as np
    >>> from geounet import model
    >>> from geounet.model import networks
    >>> b = networks.init_bundle(bands=["r", "g", "b"],
    ...                       classes=[model.ClassInfo(0, "bg", "#000000"), model.ClassInfo(1, "fg", "#ff0000")],
    ...                       spec=model.ModelSpec(in_channels=3, n_classes=2, depth=2, width=4))
    >>> p = Predictor(b, device="cpu").predict(np.zeros((2, 3, 16, 16), np.float32))
    >>> p.shape, p.dtype, bool(np.allclose(p.sum(axis=1), 1))
    ((2, 2, 16, 16), dtype('float32'), True)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import torch

from geounet import cores, stream
from geounet.errors import ConfigError, ExecutionError, InputError
from geounet.model import Bundle, Normalization, normalize
from geounet.model.networks import fuse_batchnorm, module_from_bundle

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA device if there is one, else the CPU; ``cpu``; ``cuda[:N]``.

    Raises:
        ConfigError: on an unknown name, or CUDA asked for where there is none.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise ConfigError(f"device={name!r} is unknown; use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else " is a CPU-only build")
            raise ConfigError(
                f"device={name!r} but CUDA is not available ({build}, or no GPU/driver); "
                "use --device cpu or auto, or install the CUDA build of torch"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device={name!r} but only {count} CUDA device(s) exist; use cuda:0..{count - 1}"
            )
    return device


_Map = Callable[[torch.Tensor], torch.Tensor]


def _forward_view(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.rot90(t.flip(-1) if flip else t, k, dims=(-2, -1))


def _inverse_view(t: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    t = torch.rot90(t, -k, dims=(-2, -1))
    return t.flip(-1) if flip else t


def _dihedral() -> list[tuple[_Map, _Map]]:
    """The 8 flips/rotations of the square as (forward, inverse) maps on (..., H, W) tensors."""
    return [
        (partial(_forward_view, k=k, flip=flip), partial(_inverse_view, k=k, flip=flip))
        for k in range(4)
        for flip in (False, True)
    ]


class Predictor:
    """A bundle's network on one device, predicting class probabilities of normalized chips.

    Args:
        bundle: the model bundle (see :func:`geounet.model.load`).
        device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: chips per forward pass; halved automatically on a CUDA out-of-memory.
        amp: mixed precision on CUDA (bfloat16 if supported, else float16); ignored on
            the CPU, which always runs float32.
        tta: average the probabilities of the 8 flips/rotations (mapped back) of each chip.

    Raises:
        ConfigError: on a bad device or batch size.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: str = "auto",
        batch_size: int = 8,
        amp: bool = True,
        tta: bool = False,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a positive integer; use e.g. 8")
        self.bundle = bundle
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.tta = tta
        self.cuda = self.device.type == "cuda"
        self.amp = amp and self.cuda
        self.amp_dtype = (
            torch.bfloat16
            if self.cuda and torch.cuda.is_bf16_supported(including_emulation=False)
            else torch.float16
        )
        module = fuse_batchnorm(module_from_bundle(bundle)).to(self.device)
        if self.cuda:
            # Tiles all have one shape, so cuDNN's per-shape autotuning pays off (process-wide flag).
            torch.backends.cudnn.benchmark = True
        #: Channels-last everywhere (cuDNN's tensor cores; 1.5-2x faster CPU convolutions here).
        self.layout = torch.channels_last
        self.module = module.to(memory_format=self.layout).eval()  # type: ignore[call-overload]
        self._maps = _dihedral() if tta else [(_identity, _identity)]

    @property
    def n_classes(self) -> int:
        """Number of output channels (classes)."""
        return self.bundle.spec.n_classes

    @property
    def stride(self) -> int:
        """Chip height and width must be multiples of this."""
        return self.bundle.spec.stride

    def _check(self, x: np.ndarray) -> np.ndarray:
        c, s = self.bundle.spec.in_channels, self.stride
        if x.ndim != 4 or x.shape[1] != c:
            raise InputError(
                f"chips of shape {x.shape} must be (batch, {c}, height, width) for the bundle's bands "
                f"{list(self.bundle.bands)}; stack chips with the bundle's band order"
            )
        if x.shape[2] % s or x.shape[3] % s:
            raise InputError(
                f"chips of shape {x.shape} must have height and width multiples of the model's stride {s}; "
                f"use a tile size that is a multiple of {s}"
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(B, K, H, W)`` float32 of normalized chips ``(B, C, H, W)``.

        Raises:
            InputError: on a wrong shape (band count, size not a multiple of the stride).
            ExecutionError: when even one chip does not fit in GPU memory.
        """
        x = self._check(np.asarray(x))
        b, _, h, w = x.shape
        out = np.empty((b, self.n_classes, h, w), dtype=np.float32)
        i = 0
        while i < b:
            n = min(self.batch_size, b - i)
            try:
                out[i : i + n] = self._run(x[i : i + n])
            except torch.cuda.OutOfMemoryError as exc:
                if n == 1:
                    raise ExecutionError(
                        f"one {h}x{w} chip does not fit in the memory of {self.device} even with batch size 1; "
                        "use a smaller --tile, or --device cpu"
                    ) from exc
                if self.cuda:
                    torch.cuda.empty_cache()
                self.batch_size = max(1, n // 2)
                log.warning("out of GPU memory at batch size %d; retrying with %d", n, self.batch_size)
                continue
            i += n
        return out

    def predict_rows(
        self, x: np.ndarray, *, rows: int | None = None, normalization: Normalization | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Softmax probabilities of one chip ``(C, H, W)``, streamed in strips of rows.

        Yields ``(row0, probs)`` with ``probs`` of shape ``(K, h, W)`` float32 covering rows
        ``row0 .. row0 + h`` of the chip; together the strips cover every row once, in order.
        Equal to :meth:`predict` of the same chip (to float rounding, ~1e-6) with memory
        proportional to the chip's width. TTA is not streamed: it falls back to :meth:`predict`.
        The chip is normalized already, or raw with its ``normalization`` given: each strip is
        then normalized by :func:`geounet.model.normalize` as it enters the network, so no
        normalized copy of the whole tile is made.

        Raises:
            InputError: on a wrong shape (band count, size not a multiple of the stride).
        """
        chip = self._check(np.asarray(x)[None])
        if self.tta or not stream.streamable(self.module):
            yield 0, self.predict(chip if normalization is None else normalize(chip, normalization))[0]
            return
        step = rows or strip_rows(chip.shape[3])
        row0 = 0

        def prepare(piece: torch.Tensor) -> torch.Tensor:  # one strip: normalized, on the device
            if normalization is not None:
                piece = torch.from_numpy(normalize(piece.numpy(), normalization))
            return piece.to(self.device)

        with torch.inference_mode(), self._sharing_cores() as share:
            t = torch.from_numpy(chip)  # strips go to the device (and channels-last) one by one
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                strips = stream.StreamingUNet(self.module).strips(
                    t, rows=step, layout=self.layout, prepare=prepare
                )
                while True:
                    share()
                    logits = next(strips, None)
                    if logits is None:
                        break
                    p = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
                    yield row0, p
                    row0 += p.shape[1]

    @contextlib.contextmanager
    def _sharing_cores(self) -> Iterator[Callable[[], None]]:
        """A callable that sets torch's threads from :data:`geounet.cores.SHARE` (CPU only).

        The caller's thread count is the most the model takes, and it is restored on exit.
        """
        if self.cuda:
            yield lambda: None
            return
        base = torch.get_num_threads()
        now = [base]

        def share() -> None:
            n = cores.SHARE.model_threads(base)
            if n != now[0]:
                torch.set_num_threads(n)
                now[0] = n

        try:
            yield share
        finally:
            if now[0] != base:
                torch.set_num_threads(base)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        """One forward pass (all TTA views) of one batch; returns float32 probabilities."""
        with torch.inference_mode():
            if not self.cuda:
                # One chip per pass: channels-last CPU kernels round differently with the batch
                # size (~6e-8), so a tile's result would depend on its batch companions and the
                # executors (batch 8 here, 16 in a Ray actor) would disagree at rounding ties.
                t = torch.from_numpy(chunk)
                parts = []
                with self._sharing_cores() as share:
                    for i in range(len(t)):
                        share()
                        parts.append(self._probs(t[i : i + 1]))
                return torch.cat(parts).numpy()
            host = torch.from_numpy(chunk).pin_memory()
            t = host.to(self.device, non_blocking=True)
            probs = self._probs(t)
            result = torch.empty(probs.shape, dtype=torch.float32, pin_memory=True)
            result.copy_(probs, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
            return result.numpy()

    def _probs(self, t: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        for fwd, inv in self._maps:
            view = fwd(t).contiguous(memory_format=self.layout)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                logits = self.module(view)
            p = inv(torch.softmax(logits.float(), dim=1))
            total = p if total is None else total + p
        assert total is not None
        return (total / len(self._maps)).contiguous() if len(self._maps) > 1 else total.contiguous()


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


#: The predict stage's share of memory on the CPU (bytes): enough for 2224-px streamed tiles
#: (9 tiles for a 6000² scene, 1.24 network px per output px) with the whole job under 1.5 GB.
CPU_MEMORY = 512 << 20
#: The share of a GPU's free memory the planner may fill (the rest: cuDNN workspaces, other jobs).
GPU_SHARE = 0.6


def default_memory(device: torch.device) -> int:
    """The predict stage's memory budget on ``device`` when ``--memory`` is not given (bytes).

    On CUDA, a share of the device's free memory; on the CPU, :data:`CPU_MEMORY` or 1/16 of
    the machine's memory when that is less.

    Example:
        >>> default_memory(torch.device("cpu")) <= CPU_MEMORY
        True
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_SHARE)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return CPU_MEMORY
    return int(min(CPU_MEMORY, total // 16))


def strip_rows(width: int) -> int:
    """Input rows per streamed strip: about 128k pixels a strip, 16..256 rows, a multiple of 16.

    Measured on the 2-core CPU (width-16 U-Net, 1 thread): strips of 32-64 rows of a 2048-px
    wide tile run at the speed per pixel of an ordinary 512-px tile; much thinner strips pay
    per-call overhead, much taller ones lose the cache. (At 2 threads, 112-row strips of a
    2272-px tile were 9-12% faster than 48-row ones, but held 115 MB more at 2048² and 190 MB
    more at 6000²: not taken while a 6000² scene must stay under 1.5 GB.)

    Example:
        >>> strip_rows(2048), strip_rows(256), strip_rows(20000)
        (64, 256, 16)
    """
    return max(16, min(256, (1 << 17) // max(width, 1) // 16 * 16))
