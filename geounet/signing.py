"""Signed asset hrefs that expire mid-job: re-sign and retry once when the storage refuses a read.

Planetary Computer hands out SAS tokens valid for about an hour; a region job reading for
longer would fail on every tile after that. A scene searched through a preset that signs
(:attr:`geounet.stac_presets.Preset.sign`) records its signer's name (``Scene.signer``);
when a read of such a scene fails (storage answers HTTP 403 ``AuthenticationFailed`` to an
expired signature, which GDAL reports as a failed tile read), the reader asks
:func:`resign` for a fresh href of the unsigned asset URL and retries once.
The fresh href is remembered for the process (:func:`current`), so the next tiles use it
straight away.

Signers are a registry by name (:func:`register`, like rasterio's merge methods):
``planetary-computer`` uses the ``planetary-computer`` package (``pip install
'geounet[planetary-computer]'``), dropping its token cache first so the token is new.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from geounet.errors import ConfigError

Signer = Callable[[str], str]

_SIGNERS: dict[str, Signer] = {}
_FRESH: dict[str, str] = {}
_LOCK = threading.Lock()


def register(name: str, signer: Signer) -> None:
    """Make ``signer`` (unsigned href → signed href) available as ``Scene.signer`` name ``name``."""
    _SIGNERS[name] = signer


def unsigned(href: str) -> str:
    """``href`` without its query string (where a SAS token lives).

    Example:
        >>> unsigned("https://acct.blob.core.windows.net/c/B04.tif?st=1&se=2&sig=x")
        'https://acct.blob.core.windows.net/c/B04.tif'
    """
    parts = urlsplit(href)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) if parts.query else href


def current(href: str) -> str:
    """The freshest signed form of ``href`` this process has (``href`` itself until a re-sign)."""
    with _LOCK:
        return _FRESH.get(unsigned(href), href)


def resign(href: str, signer: str) -> str:
    """A freshly signed href for the asset of ``href``, by the signer named ``signer``; remembered.

    Raises:
        ConfigError: an unknown signer, or one whose package is missing.
    """
    sign = _SIGNERS.get(signer)
    if sign is None:
        raise ConfigError(f"signer {signer!r} is unknown; use one of {', '.join(sorted(_SIGNERS))}")
    base = unsigned(href)
    fresh = sign(base)
    with _LOCK:
        _FRESH[base] = fresh
    return fresh


def _planetary_computer(href: str) -> str:
    try:
        import planetary_computer
        from planetary_computer import sas
    except ImportError as exc:
        raise ConfigError(
            "Planetary Computer assets need signing: pip install 'geounet[planetary-computer]'"
        ) from exc
    sas.TOKEN_CACHE.clear()  # the cached token is the one storage just refused
    signed: str = planetary_computer.sign_url(href)
    return signed


register("planetary-computer", _planetary_computer)
