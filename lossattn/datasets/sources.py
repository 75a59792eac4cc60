"""Where data comes from: the data root, the per-user cache, and verified downloads.

Resolution of the data root: explicit ``root=`` argument (the CLI's ``--data-dir``), else the
``LOSSATTN_DATA`` environment variable, else the per-user cache folder (``$XDG_CACHE_HOME/lossattn`` or
``~/.cache/lossattn``). Files live at ``<root>/<dataset>/<file>``.

Downloads stream into ``<file>.part`` next to the destination while hashing, are checked against the
catalogue's checksum, and only then renamed atomically into place; on any failure (offline, HTTP error,
truncated transfer, checksum mismatch, interruption) the ``.part`` file is removed and no final file appears.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from .catalog import DatasetSpec, Download, get_spec
from .errors import DataNotFoundError, DownloadError

__all__ = [
    "data_root",
    "cache_dir",
    "find_data_file",
    "missing_data_error",
    "download_url",
    "fetch",
    "is_present",
]

log = logging.getLogger(__name__)

ENV_ROOT = "LOSSATTN_DATA"
ENV_BASE_URL = "LOSSATTN_DOWNLOAD_URL"
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Per-user cache folder: ``$XDG_CACHE_HOME/lossattn``, else ``~/.cache/lossattn`` (not created)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "lossattn"


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Resolves the data root folder (not created).

    Args:
        root: Explicit folder; wins over everything else.

    Returns:
        ``root`` if given, else ``$LOSSATTN_DATA`` if set and non-empty, else :func:`cache_dir`.
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(ENV_ROOT, "").strip()
    if env:
        return Path(env).expanduser()
    return cache_dir()


def find_data_file(root: Path, candidates: tuple[str, ...]) -> Path | None:
    """Returns the first candidate path (relative to ``root``) that exists as a file, else ``None``."""
    for rel in candidates:
        p = root / rel
        if p.is_file():
            return p
    return None


def is_present(name: str, root: str | os.PathLike[str] | None = None) -> bool:
    """Whether every file the dataset needs is present under the data root (embedded sets: always)."""
    spec = get_spec(name)
    base = data_root(root)
    return all(find_data_file(base, group) is not None for group in spec.requirements)


def missing_data_error(spec: DatasetSpec, root: Path, candidates: tuple[str, ...], what: str) -> DataNotFoundError:
    """Builds the error for a missing data file: where it was looked for, where to put it, how to get it."""
    tried = "\n".join(f"  {root / c}" for c in candidates)
    urls = [d.url for d in spec.downloads]
    hint = (
        f"Run `lossattn data fetch {spec.name}` (or lossattn.datasets.fetch({spec.name!r}, root=...)) with "
        f"internet access"
    )
    if urls:
        hint += ", or download " + ", ".join(urls) + " yourself"
    first = root / candidates[0]
    return DataNotFoundError(
        f"{spec.name}: {what} not found. Looked for:\n{tried}\n"
        f"Place the file at {first} (folder {first.parent}). {hint}. "
        f"The data root comes from root=/--data-dir, else ${ENV_ROOT}, else {cache_dir()}."
    )


def _parse_checksum(checksum: str) -> tuple[str, str]:
    algo, _, digest = checksum.partition(":")
    algo = algo.lower()
    if algo not in ("sha256", "md5") or not digest:
        raise ValueError(f"checksum must look like 'sha256:<hex>' or 'md5:<hex>', got {checksum!r}")
    return algo, digest.lower()


def _file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download_url(
    url: str,
    dest: str | os.PathLike[str],
    checksum: str | None = None,
    *,
    timeout: float = 60.0,
) -> Path:
    """Downloads ``url`` to ``dest`` through ``dest + ".part"`` and an atomic rename.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: Destination file; its folder is created.
        checksum: ``"sha256:<hex>"`` or ``"md5:<hex>"``; the file is kept only if it matches.
        timeout: Socket timeout in seconds.

    Returns:
        ``dest`` as a ``Path``.

    Raises:
        DownloadError: Offline/unreachable, HTTP error, fewer bytes than announced, or checksum mismatch.
            Neither ``dest`` nor the ``.part`` file is left behind.
    """
    dest = Path(dest)
    algo, expected = _parse_checksum(checksum) if checksum else ("sha256", None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.new(algo)
    received = 0
    try:
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "lossattn-data-fetch"})
            with urllib.request.urlopen(req, timeout=timeout) as resp, open(part, "wb") as out:
                length = resp.headers.get("Content-Length")
                announced = int(length) if length and length.isdigit() else None
                while True:
                    block = resp.read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    h.update(block)
                    received += len(block)
        except http.client.IncompleteRead as e:
            raise DownloadError(
                f"download of {url} was cut off after {received + len(e.partial)} bytes (truncated transfer); "
                f"{dest} was not written"
            ) from e
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            raise DownloadError(f"could not download {url} ({reason}); {dest} was not written") from e
        if announced is not None and received != announced:
            raise DownloadError(
                f"download of {url} is truncated: received {received} of {announced} bytes; {dest} was not written"
            )
        if expected is not None and h.hexdigest() != expected:
            raise DownloadError(
                f"checksum mismatch for {url}: expected {algo} {expected}, got {h.hexdigest()} "
                f"({received} bytes; corrupted or a different file); {dest} was not written"
            )
        os.replace(part, dest)
    finally:
        if part.exists():
            part.unlink()
    return dest


def _effective_url(d: Download, base_url: str | None) -> str:
    base = base_url if base_url is not None else os.environ.get(ENV_BASE_URL, "").strip() or None
    if base is None:
        return d.url
    return base.rstrip("/") + "/" + d.filename


def _fetch_one(d: Download, root: Path, base_url: str | None, timeout: float) -> Path:
    target = root / d.target
    url = _effective_url(d, base_url)
    try:
        if d.member is None and d.extract is None:
            return download_url(url, target, d.checksum, timeout=timeout)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as tmp:
            archive = download_url(url, Path(tmp) / d.filename, d.checksum, timeout=timeout)
            if d.member is not None:
                return _extract_member(archive, d, target)
            return _extract_tar_folder(archive, d, target, Path(tmp))
    except DownloadError as e:
        inner = d.member or d.extract
        what = f"extract {inner} from it and place that at" if inner else "place it at"
        raise DownloadError(
            f"{e}\nWithout internet: download {d.url} elsewhere (checksum {d.checksum}), {what} {target} "
            f"(folder {target.parent})."
        ) from e


def _extract_member(archive: Path, d: Download, target: Path) -> Path:
    part = target.with_name(target.name + ".part")
    try:
        try:
            with zipfile.ZipFile(archive) as z, z.open(d.member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
        except (zipfile.BadZipFile, KeyError, OSError) as e:
            raise DownloadError(f"could not extract {d.member} from {d.url} ({e})") from e
        if d.member_checksum:
            algo, expected = _parse_checksum(d.member_checksum)
            got = _file_digest(part, algo)
            if got != expected:
                raise DownloadError(
                    f"checksum mismatch for {d.member} in {d.url}: expected {algo} {expected}, got {got}"
                )
        os.replace(part, target)
    finally:
        if part.exists():
            part.unlink()
    return target


def _extract_tar_folder(archive: Path, d: Download, target: Path, tmp: Path) -> Path:
    staging = tmp / "extract"
    staging.mkdir()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = []
            for m in tar.getmembers():
                p = Path(m.name)
                if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
                    continue
                if p.parts and p.parts[0] == d.extract:
                    members.append(m)
            if not members:
                raise DownloadError(f"{d.url} holds no folder {d.extract}/")
            try:
                tar.extractall(staging, members=members, filter="data")
            except TypeError:  # Python without extraction filters; members were vetted above
                tar.extractall(staging, members=members)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DownloadError(f"could not extract {d.extract}/ from {d.url} ({e})") from e
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging / d.extract, target)
    return target


def fetch(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    base_url: str | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> list[Path]:
    """Downloads a dataset's files into the data root (checksum-verified, atomic).

    If the dataset is already present (any accepted file/layout), nothing is downloaded unless ``force``.

    Args:
        name: Dataset name or alias (see :func:`~lossattn.datasets.list_datasets`).
        root: Data root (default: :func:`data_root`).
        base_url: Mirror to download from instead of the canonical URLs: each file is fetched from
            ``<base_url>/<file name of the canonical URL>``. Defaults to ``$LOSSATTN_DOWNLOAD_URL`` if set.
        force: Download even if the dataset is present (replacing the catalogue files).
        timeout: Socket timeout per request, seconds.

    Returns:
        Paths of the files/folders placed (or already present) under the root; empty for embedded datasets.

    Raises:
        DownloadError: A download failed; the message names the URL, the file and the folder to place it in
            by hand. Files completed before the failure are kept (each one is verified).
    """
    spec = get_spec(name)
    base = data_root(root)
    if not spec.downloads:
        return []
    if not force and is_present(spec.name, base):
        return [find_data_file(base, group) for group in spec.requirements]  # type: ignore[misc]
    placed = []
    for d in spec.downloads:
        target = base / d.target
        if target.exists() and not force:
            placed.append(target)
            continue
        log.info("downloading %s -> %s", _effective_url(d, base_url), target)
        placed.append(_fetch_one(d, base, base_url, timeout))
    return placed
