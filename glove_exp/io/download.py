"""A file appears under its final name only once complete: a download grows in ``<dest>.part``, renamed
once its size (and sha256, when configured) check out; an extraction is written atomically."""

from __future__ import annotations

import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

from tqdm import tqdm

from glove_exp.core.errors import EmbeddingsError
from glove_exp.io.files import atomic_write, remove_stale_temps, sha256_file

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0


def check_url(url: str) -> None:
    """Allow ``https://`` anywhere and ``http://`` to loopback hosts only (used by tests)."""
    parts = urllib.parse.urlsplit(url)
    if not (parts.scheme == "https" and parts.hostname or parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS):
        raise EmbeddingsError(
            f"refusing to download {url}: only https:// URLs are allowed (http:// only to 127.0.0.1, localhost or ::1)"
        )


def download(url: str, dest: Path, sha256: str | None = None, progress: bool = True) -> Path:
    """``dest``, downloaded unless it exists; a later call resumes the ``.part`` with a Range request. A
    wrong size or sha256 deletes the ``.part``; refused URLs and network failures keep it."""
    check_url(url)
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    expected = _fetch(url, part, progress)
    _verify(url, part, expected, sha256)
    os.replace(part, dest)
    log.info("downloaded %s to %s", url, dest)
    return dest


def _fetch(url: str, part: Path, progress: bool) -> int | None:
    """Fill ``part`` from ``url``, resuming it if it exists; returns the expected total size."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "glove-exp", **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = _opener(url).open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:
            total = _content_range(err.headers.get("Content-Range"))[1]
            if total == offset:  # the previous run got every byte but stopped before renaming
                return total
            part.unlink()
            return _fetch(url, part, progress)
        raise EmbeddingsError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:
        raise _unreachable(url, err) from None
    with response:
        if offset and response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise EmbeddingsError(
                    f"download of {url}: asked for bytes from {offset}, the server sent from {start}; run again"
                )
            if total is None and (length := _content_length(response)) is not None:
                total = offset + length
        else:  # 200: the server ignored the Range header (or there was none), start over
            offset, total = 0, _content_length(response)
        with open(part, "ab" if offset else "wb") as out:
            _copy(_chunks(url, response), out, part.name.removesuffix(".part"), progress, total, offset)
    return total


def _copy(
    blocks: Iterable[bytes], out: BinaryIO, desc: str, progress: bool, total: int | None, initial: int = 0
) -> None:
    with tqdm(
        total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not progress
    ) as bar:
        for block in blocks:
            out.write(block)
            bar.update(len(block))


def _chunks(url: str, response: BinaryIO) -> Iterator[bytes]:
    while True:
        try:
            chunk = response.read(CHUNK_BYTES)
        except (OSError, http.client.HTTPException) as err:
            raise _unreachable(url, err, interrupted=True) from None
        if not chunk:
            return
        yield chunk


def _verify(url: str, part: Path, expected: int | None, sha256: str | None) -> None:
    got = part.stat().st_size
    if expected is not None and got != expected:
        part.unlink()
        raise EmbeddingsError(
            f"download of {url} is incomplete: expected {expected} bytes, got {got}; deleted it, run again to retry"
        )
    if sha256:
        digest, wanted = sha256_file(part), sha256.strip().lower()
        if digest != wanted:
            part.unlink()
            raise EmbeddingsError(
                f"download of {url} has the wrong checksum: expected sha256 {wanted}, got {digest}; deleted it"
            )


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Apply :func:`check_url` to redirect targets too (no silent https -> http downgrade)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(url: str) -> urllib.request.OpenerDirector:
    handlers: list[urllib.request.BaseHandler] = [_CheckedRedirects()]
    if urllib.parse.urlsplit(url).hostname in LOOPBACK_HOSTS:
        handlers.append(urllib.request.ProxyHandler({}))  # an http_proxy setting must not capture loopback
    return urllib.request.build_opener(*handlers)


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.strip().isdigit() else None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``"bytes 100-199/200"`` -> ``(100, 200)``; ``"bytes */200"`` -> ``(None, 200)``."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _unreachable(url: str, err: BaseException, interrupted: bool = False) -> EmbeddingsError:
    reason = getattr(err, "reason", None) or err
    what = "the download was interrupted (run again to resume)" if interrupted else "could not be reached"
    return EmbeddingsError(
        f"{url} {what}: {reason}; without network, download the file elsewhere and set embeddings.path= to the local GloVe text file"
    )


def member_path(dest_dir: Path, member: str) -> Path:
    """Where :func:`extract_member` puts ``member``; refuses absolute names and ``..`` parts."""
    parts = PurePosixPath(member.replace("\\", "/")).parts
    if not member or member.startswith(("/", "\\")) or PureWindowsPath(member).drive or ".." in parts:
        raise EmbeddingsError(
            f"refusing to extract {member!r}: absolute paths and '..' are not allowed in a zip member name"
        )
    return Path(dest_dir).joinpath(*parts)


def extract_member(zip_path: Path, member: str, dest_dir: Path, progress: bool = True) -> Path:
    """``dest_dir / member``, extracted with its CRC checked; a corrupt or truncated zip is deleted."""
    zip_path = Path(zip_path)
    target = member_path(dest_dir, member)
    if not zip_path.is_file():
        raise EmbeddingsError(f"{zip_path} does not exist")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = archive.namelist()
            if member not in names:
                raise EmbeddingsError(
                    f"{zip_path} has no member {member!r}; its members are: {', '.join(names) or 'none'}"
                )
            info = archive.getinfo(member)
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(target.parent)  # a killed extraction of 840B leaves 5 GB
            atomic_write(target, lambda out: _copy_member(archive, info, out, progress))
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        zip_path.unlink(missing_ok=True)
        raise EmbeddingsError(
            f"{zip_path} is corrupt ({err}); deleted it so that the next run downloads it again"
        ) from None
    log.info("extracted %s from %s", target, zip_path)
    return target


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: BinaryIO, progress: bool) -> None:
    # Reading to the end makes zipfile compare the CRC-32 (BadZipFile on mismatch).
    with archive.open(info) as src:
        _copy(iter(lambda: src.read(CHUNK_BYTES), b""), out, f"extract {info.filename}", progress, info.file_size)
