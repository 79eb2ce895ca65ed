"""Guards for untrusted input: safe file names, allowed asset hrefs, credentials kept out of logs.

Everything a STAC API or a config hands us is untrusted: an item id may be ``../../x``,
an asset href may point GDAL at ``/vsistdin/``, an inline ``<VRTDataset>`` or a database
connection string, and a signed URL carries a token that must not end up in a log file or
a run manifest that is shared. This module is pure (no I/O beyond what its functions say):

- :func:`safe_name` / :func:`safe_path`: ids and asset names → file names that cannot
  leave the output folder, stay distinct for distinct ids, and are portable;
- :func:`check_href`: only ``http``, ``https``, ``s3``, ``gs`` and local files (``file://``
  or a plain path) are read; ``GEOUNET_HREF_SCHEMES`` (comma-separated) configures the list;
- :func:`redact` / :func:`redact_obj`: remove passwords in URLs, signatures and tokens in
  query strings (Planetary Computer SAS tokens, AWS pre-signed URLs), AWS access keys and
  ``Bearer`` tokens from text and JSON-like values; :func:`install_log_redaction` applies
  it to every log record of the process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from geounet.errors import InputError

#: Href schemes read by default; ``file`` stands for local paths too.
DEFAULT_SCHEMES: tuple[str, ...] = ("http", "https", "s3", "gs", "file")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def safe_name(value: str, *, max_length: int = 100) -> str:
    """A portable file name for an untrusted id or asset name; never a path, never hidden.

    Characters other than ``A-Z a-z 0-9 . _ -`` become ``_``; leading dots are dropped
    (no ``..``, no hidden files). When anything had to change, or the name is too long, a
    short hash of the original is appended, so two different ids never share a name.

    Example:
        >>> safe_name("S2A_MSIL2A_20240601T101031_R022_T33UUU")
        'S2A_MSIL2A_20240601T101031_R022_T33UUU'
        >>> safe_name("../../etc/passwd")
        'etc_passwd-3754d6cb'
        >>> safe_name("..")
        '_-5ec1f7e7'
    """
    text = str(value)
    cleaned = _UNSAFE.sub("_", text).lstrip("._").rstrip("_") or "_"
    if _WINDOWS_RESERVED.match(cleaned):
        cleaned = f"_{cleaned}"
    if cleaned == text and len(cleaned) <= max_length:
        return cleaned
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[: max_length - 9]}-{digest}"


def safe_path(base: str | os.PathLike[str], *parts: str, suffix: str = "") -> Path:
    """``base / safe_name(p1) / safe_name(p2) ...`` + ``suffix``, checked to lie inside ``base``.

    Raises:
        InputError: if the result would leave ``base`` (cannot happen with sanitized parts;
            the check guards against a bug or a symlink planted inside ``base``).

    Example:
        >>> safe_path("/out", "../../x", suffix=".tif").as_posix()
        '/out/x-9cdf6a50.tif'
    """
    root = Path(base)
    names = [safe_name(p) for p in parts]
    if names:
        names[-1] += suffix
    path = root.joinpath(*names)
    resolved_root = root.resolve()
    resolved = path.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise InputError(
            f"{'/'.join(parts)!r} would be written outside the output folder {str(root)!r}; "
            "remove the link inside the output folder"
        )
    return path


def allowed_schemes() -> tuple[str, ...]:
    """The href schemes read: ``GEOUNET_HREF_SCHEMES`` (comma-separated) or :data:`DEFAULT_SCHEMES`."""
    configured = os.environ.get("GEOUNET_HREF_SCHEMES")
    if not configured:
        return DEFAULT_SCHEMES
    return tuple(s.strip().lower() for s in configured.split(",") if s.strip())


def href_scheme(href: str) -> str:
    """The scheme of an href: ``file`` for local paths (also Windows drive letters).

    Example:
        >>> href_scheme("https://h/a.tif"), href_scheme("/data/a.tif"), href_scheme("C:\\\\x.tif")
        ('https', 'file', 'file')
        >>> href_scheme("/vsistdin/"), href_scheme("PG:dbname=x")
        ('vsi', 'pg')
    """
    text = href.strip()
    if text.startswith("/vsi"):
        return "vsi"
    match = _SCHEME.match(text)
    if match is None or len(match.group(1)) == 1:  # no scheme, or a drive letter
        return "file"
    return match.group(1).lower()


def check_href(href: str, *, schemes: Iterable[str] | None = None, what: str = "asset href") -> str:
    """Return ``href`` if it may be read, else raise: only the allowed schemes, nothing GDAL-special.

    Refused: other schemes (``ftp:``, ``data:``...), GDAL virtual paths (``/vsi...``), GDAL
    connection strings (``PG:``, ``WMS:``...) and inline XML (``<VRTDataset>`` can read any
    local file), and control characters.

    Raises:
        InputError: naming the (redacted) href and the allowed schemes.

    Example:
        >>> check_href("https://example.com/B04.tif")
        'https://example.com/B04.tif'
        >>> check_href("ftp://example.com/B04.tif")
        Traceback (most recent call last):
        ...
        geounet.errors.InputError: asset href 'ftp://example.com/B04.tif' has scheme 'ftp', ...
    """
    allowed = tuple(schemes) if schemes is not None else allowed_schemes()
    text = str(href)
    if "<" in text or any(ord(ch) < 32 for ch in text):
        raise InputError(
            f"{what} {redact(text)[:80]!r} is not a URL or path (inline XML or control characters); "
            "refusing to read it: fix the STAC item or config"
        )
    scheme = href_scheme(text)
    if scheme not in allowed:
        raise InputError(
            f"{what} {redact(text)!r} has scheme {scheme!r}, not one of {', '.join(allowed)}; "
            "refusing to read it: fix the STAC item, or allow the scheme in GEOUNET_HREF_SCHEMES"
        )
    return text


# --------------------------------------------------------------------------- credentials

#: Query parameters whose values are secrets or parts of a signature (lower-case).
SECRET_PARAMS = frozenset(
    {
        # Azure SAS (Planetary Computer tokens)
        "sig", "se", "st", "sp", "sv", "sr", "skoid", "sktid", "skt", "ske", "sks", "skv", "spr", "srt", "ss",
        # AWS / GCS pre-signed URLs
        "x-amz-signature", "x-amz-credential", "x-amz-security-token", "awsaccesskeyid", "signature",
        "x-goog-signature", "x-goog-credential", "googleaccessid",
        # generic
        "token", "access_token", "id_token", "refresh_token", "api_key", "apikey", "key", "password",
        "passwd", "secret", "client_secret", "subscription-key", "code", "auth",
    }
)  # fmt: skip

REDACTED = "REDACTED"

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_PARAM = re.compile(r"([?&;])([A-Za-z0-9_.%-]+)=([^&#\s'\"<>]*)")
_SECRET_KEY = re.compile(
    r"(?i)(passw(or)?d|secret|token|api[_-]?key|access[_-]?key|credential|signature|private[_-]?key)"
)
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_ASSIGN = re.compile(
    r"(?i)\b((?:aws_)?secret(?:_access)?_key|aws_session_token|password|passwd|api[_-]?key|"
    r"client_secret|access_token|sas_token|token)(\s*[=:]\s*|\"\s*:\s*\")([^\s,;&\"']+)"
)


def _redact_url(url: str) -> str:
    url = _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", url)
    if "?" not in url and "#" not in url:
        return url
    head, sep, query = url.partition("?")
    if not sep:
        return url
    query, hsep, fragment = query.partition("#")
    pairs = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        if eq and urllib.parse.unquote(name).lower() in SECRET_PARAMS:
            pairs.append(f"{name}={REDACTED}")
        else:
            pairs.append(part)
    return head + "?" + "&".join(pairs) + (hsep + fragment if hsep else "")


def _redact_param(m: re.Match[str]) -> str:
    if urllib.parse.unquote(m.group(2)).lower() in SECRET_PARAMS and m.group(3) != REDACTED:
        return f"{m.group(1)}{m.group(2)}={REDACTED}"
    return m.group(0)


def redact(text: str) -> str:
    """``text`` with credentials replaced by ``REDACTED``: URL passwords, signed-URL query values,
    AWS access key ids, ``Bearer`` tokens and ``secret=...``-style assignments.

    Example:
        >>> redact("GET https://pc.blob.core.windows.net/a/B04.tif?st=2024&se=2024&sp=rl&sig=AbC%2Bd=")
        'GET https://pc.blob.core.windows.net/a/B04.tif?st=REDACTED&se=REDACTED&sp=REDACTED&sig=REDACTED'
        >>> redact("s3 key AKIAIOSFODNN7EXAMPLE, https://user:pw@host/x.tif?band=4")
        's3 key REDACTED, https://REDACTED@host/x.tif?band=4'
        >>> redact('"GET /b/x.tif?X-Amz-Signature=abc&v=1 HTTP/1.1" 206')
        '"GET /b/x.tif?X-Amz-Signature=REDACTED&v=1 HTTP/1.1" 206'
    """
    if not text:
        return text
    out = _URL.sub(lambda m: _redact_url(m.group(0)), text)
    out = _PARAM.sub(_redact_param, out)  # query strings outside full URLs (e.g. "GET /a.tif?sig=...")
    out = _AWS_KEY_ID.sub(REDACTED, out)
    out = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", out)
    return _ASSIGN.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", out)


def redact_obj(obj: Any) -> Any:
    """:func:`redact` applied to every string (keys too) of a JSON-like value; returns a copy.

    Values under secret-looking keys (``password``, ``token``, ``secret_access_key``...) are
    replaced whole.

    Example:
        >>> redact_obj({"href": "https://h/x.tif?token=abc", "n": [1, "ok"], "aws": {"secret_key": "s"}})
        {'href': 'https://h/x.tif?token=REDACTED', 'n': [1, 'ok'], 'aws': {'secret_key': 'REDACTED'}}
    """
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {
            redact_obj(k): REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) and v else redact_obj(v)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


_installed = False


def install_log_redaction() -> None:
    """Redact every log record of this process (its formatted message and exception text).

    Wraps :func:`logging.setLogRecordFactory` once, so records of every logger (GDAL's,
    urllib3's, ours) are cleaned before any handler sees them.
    """
    global _installed
    if _installed:
        return
    base = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return record
        record.msg = redact(message)
        record.args = None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
