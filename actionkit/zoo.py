"""The model zoo: MMAction2 0.x's published checkpoints of the shipped configs, by name, and their download.

The table is package data (``actionkit/model_zoo.json``): one :class:`ZooEntry` per published checkpoint
(38), with its config, weights URL, dataset, published metrics and training resolution.

Names.  An entry is named after its config.  A config with two published checkpoints (trained on frames of
two resolutions) gets one name per checkpoint, suffixed with the training resolution: ``_340x256``,
``_short_side_256`` or ``_short_side_320``.  The plain config name stays valid as an *alias* of the checkpoint
published under the config's own name (its URL has no ``256p``), e.g. ``i3d_r50_32x2x1_100e_kinetics400_rgb``
-> ``i3d_r50_32x2x1_100e_kinetics400_rgb_340x256`` and ``slowfast_r50_4x16x1_256e_kinetics400_rgb`` ->
``slowfast_r50_4x16x1_256e_kinetics400_rgb_short_side_320``.  The name of the URL's folder (MMAction2's own
name for the checkpoint, e.g. ``i3d_r50_256p_32x2x1_100e_kinetics400_rgb``) is an alias too.  Lookups ignore
a leading folder and a trailing ``.py``, so a config path names its entry.

Downloads (:func:`download_checkpoint`) go to :func:`checkpoint_cache_dir` (``$ACTIONKIT_HOME/checkpoints``,
default ``~/.cache/actionkit/checkpoints``) under the URL's file name.  A file already there is used without
any network access (after its SHA-256 prefix is checked), so a file downloaded by hand is picked up when it is
put at that path.  A download is written to ``<name>.part`` (resumed with an HTTP Range request when a
previous attempt was cut), its SHA-256 prefix is checked against the ``-<8 hex>.pth`` suffix of the file name
(MMAction2's ``publish_model.py`` convention) and only then renamed into place; a mismatching file is deleted.
A ``<name>.lock`` file beside it serialises processes that download the same file at the same time.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping

from .utils import HOME_ENV, actionkit_home, fsync_path

_LOG = logging.getLogger("actionkit")

TASKS = ("recognition", "detection")
CONFIG_DIR_ENV = "ACTIONKIT_CONFIG_DIR"
DEFAULT_TIMEOUT = 30.0
_HASH_SUFFIX_RE = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_CHUNK = 1 << 20


class UnknownModelError(ValueError):
    """A name that is not in the model zoo; the message lists the closest names."""

    def __init__(self, name: str, close: list[str], message: str | None = None):
        self.name = name
        self.close = close
        hint = f"; close names: {', '.join(close)}" if close else ""
        super().__init__((message or f"unknown model zoo name '{name}'") + hint
                         + " (run 'actionkit models' for the list)")


class DownloadError(OSError):
    """A checkpoint that could not be downloaded; one line with the URL and where a hand-downloaded copy goes."""


class ChecksumError(DownloadError):
    """A downloaded (or hand-placed) file whose SHA-256 does not start with the prefix in its name."""


@dataclass(frozen=True)
class ZooEntry:
    """One published checkpoint.

    ``config`` is repo-relative (``configs/...py``; see :func:`config_path`); ``metrics`` are the published
    figures in percent (``Top 1 Accuracy`` / ``Top 5 Accuracy`` or ``mAP``); ``resolution`` is the training
    data's frame size (``340x256``, ``short-side 256``, ...; ``None`` where MMAction2 did not publish it);
    ``aliases`` are other names that resolve to this entry.
    """

    name: str
    config: str
    url: str
    dataset: str
    task: str
    metrics: Mapping[str, float]
    resolution: str | None = None
    aliases: tuple[str, ...] = ()
    input: str | None = None
    architecture: str | None = None
    pretrained: str | None = None
    batch_size: int | None = None
    epochs: int | None = None
    training_resources: str | None = None
    flops: int | None = None
    parameters: int | None = None
    training_log: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def config_name(self) -> str:
        """The config's file stem (``i3d_r50_32x2x1_100e_kinetics400_rgb``)."""
        return Path(self.config).stem

    @property
    def filename(self) -> str:
        """The checkpoint's file name in the cache (the URL's last path segment)."""
        return url_filename(self.url)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "extra"}
        out["metrics"] = dict(self.metrics)
        out["aliases"] = list(self.aliases)
        return out


# ------------------------------------------------------------------------------------------------- the table
@lru_cache(maxsize=1)
def _load_table() -> tuple[ZooEntry, ...]:
    text = resources.files("actionkit").joinpath("model_zoo.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    known = set(ZooEntry.__dataclass_fields__) - {"extra"}
    entries = []
    for raw in doc["entries"]:
        kwargs = {k: v for k, v in raw.items() if k in known}
        kwargs["aliases"] = tuple(raw.get("aliases", ()))
        kwargs["extra"] = {k: v for k, v in raw.items() if k not in known}
        entries.append(ZooEntry(**kwargs))
    return tuple(entries)


@lru_cache(maxsize=1)
def _name_index() -> dict[str, ZooEntry]:
    index: dict[str, ZooEntry] = {}
    for entry in _load_table():
        for name in (entry.name, *entry.aliases):
            if name in index:
                raise RuntimeError(f"model_zoo.json: name '{name}' is used twice")
            index[name] = entry
    return index


def list_models(task: str | None = None) -> list[ZooEntry]:
    """Every zoo entry (table order), or those of one task (``'recognition'`` / ``'detection'``)."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task '{task}' (expected one of {', '.join(TASKS)})")
    return [e for e in _load_table() if task is None or e.task == task]


def _normalise_name(name: str) -> str:
    return os.path.basename(str(name).strip().rstrip("/\\")).removesuffix(".py")


def find_model_entry(name: str | os.PathLike) -> ZooEntry | None:
    """The entry named (or aliased) ``name`` (a folder and a ``.py`` suffix are ignored), else ``None``."""
    return _name_index().get(_normalise_name(str(name)))


def close_model_names(name: str, n: int = 5) -> list[str]:
    """Up to ``n`` zoo names or aliases that look like ``name`` (best first, one per entry)."""
    index = _name_index()
    out: list[str] = []
    seen: set[str] = set()
    for match in difflib.get_close_matches(_normalise_name(name), list(index), n=4 * n, cutoff=0.6):
        if index[match].name not in seen:
            seen.add(index[match].name)
            out.append(match)
    if not out:  # a short or partial name: the entries holding every word of it
        words = set(_normalise_name(name).lower().replace("-", "_").split("_")) - {""}
        out = [e.name for e in _load_table() if words and words <= set(e.name.split("_"))]
    return out[:n]


def get_model_entry(name: str | os.PathLike) -> ZooEntry:
    """The entry named (or aliased) ``name``; :class:`UnknownModelError` listing close names otherwise.

    A plain config name of a two-checkpoint config resolves to the checkpoint published under the config's own
    name (logged at INFO with the full name and resolution)."""
    entry = find_model_entry(name)
    if entry is None:
        raise UnknownModelError(str(name), close_model_names(str(name)))
    key = _normalise_name(str(name))
    if key != entry.name and key == entry.config_name:
        _LOG.info("model zoo: '%s' is %s (trained at %s)", key, entry.name, entry.resolution)
    return entry


def config_dir() -> Path:
    """The folder holding the shipped ``configs/`` tree.

    ``$ACTIONKIT_CONFIG_DIR`` when set, else the ``configs`` folder of the checkout the package runs from (the
    configs are not package data: they come with a source checkout / editable install)."""
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / "configs"


def config_path(entry: ZooEntry | str) -> Path:
    """The config file of ``entry`` (an entry or a zoo name); FileNotFoundError naming where it was looked for."""
    if not isinstance(entry, ZooEntry):
        entry = get_model_entry(entry)
    rel = Path(entry.config)
    rel = Path(*rel.parts[1:]) if rel.parts and rel.parts[0] == "configs" else rel
    path = config_dir() / rel
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config of model zoo entry '{entry.name}' not found (the configs come "
                                f"with a checkout of actionkit; set {CONFIG_DIR_ENV} to its configs/ folder)")
    return path


# ------------------------------------------------------------------------------------------------- the cache
def checkpoint_cache_dir() -> Path:
    """``$ACTIONKIT_HOME/checkpoints`` (default ``~/.cache/actionkit/checkpoints``); not created here."""
    return actionkit_home() / "checkpoints"


def is_url(spec: str | os.PathLike) -> bool:
    return isinstance(spec, str) and spec.lower().startswith(("http://", "https://"))


def url_filename(url: str) -> str:
    """The last path segment of ``url`` (percent-decoded); ValueError when it is not a plain file name."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"{url}: the URL does not end in a file name")
    return name


def hash_prefix(filename: str) -> str | None:
    """The SHA-256 prefix in a ``name-<8+ hex>.pth`` file name, or ``None`` when the name carries none."""
    m = _HASH_SUFFIX_RE.search(filename)
    return m.group(1) if m else None


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, int, int], str] = {}


def _verify_cached(path: Path, url: str) -> None:
    """Check a cached file's SHA-256 prefix once per (path, size, mtime); a mismatching file is deleted."""
    expected = hash_prefix(path.name)
    if expected is None:
        return
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(key) == expected:
        return
    actual = sha256_file(path)
    if not actual.startswith(expected):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise ChecksumError(f"{path}: SHA-256 {actual[:len(expected)]}... does not match the prefix {expected} in "
                            f"its name; the file was deleted (download it again from {url})")
    _VERIFIED[key] = expected


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (two processes never write the same ``.part``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def download_checkpoint(url_or_name: str, *, directory: str | os.PathLike | None = None, progress: bool = True,
                        timeout: float = DEFAULT_TIMEOUT, retries: int = 2) -> Path:
    """The local path of a checkpoint URL or zoo name, downloading it into the cache when it is not there.

    ``directory`` overrides :func:`checkpoint_cache_dir`.  A file already present is returned without network
    access.  Otherwise the file is streamed into ``<name>.part`` (tqdm progress bar when ``progress``), resumed
    with an HTTP Range request from what an earlier cut attempt left (up to ``retries`` automatic resumes per
    call), checked against the SHA-256 prefix in its name and renamed into place atomically.  Errors
    (:class:`DownloadError`, one line) name the URL and the exact path where a hand-downloaded file is used;
    a file whose hash does not match raises :class:`ChecksumError` and is deleted.
    """
    if is_url(url_or_name):
        url = str(url_or_name)
    else:
        url = get_model_entry(url_or_name).url
    cache = Path(directory).expanduser() if directory is not None else checkpoint_cache_dir()
    dest = cache / url_filename(url)
    if dest.is_file():
        _verify_cached(dest, url)
        return dest
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the checkpoint cache {cache} ({_one_line(exc)}); set {HOME_ENV} to a "
                            "writable folder") from None
    part = dest.with_name(dest.name + ".part")
    with _locked(dest.with_name(dest.name + ".lock")):
        if dest.is_file():  # another process finished it while we waited for the lock
            _verify_cached(dest, url)
            return dest
        for attempt in range(retries + 1):
            try:
                _fetch_into(url, part, timeout=timeout, progress=progress)
                break
            except _Interrupted as cut:
                if attempt == retries:
                    raise DownloadError(f"download of {url} was cut at {cut.have} bytes ({cut.reason}); run again to "
                                        f"resume from {part}, or download it by hand to {dest}") from None
                _LOG.warning("download of %s was cut at %d bytes (%s); resuming", url, cut.have, cut.reason)
        _check_and_commit(part, dest, url)
    return dest


class _Interrupted(Exception):
    def __init__(self, have: int, reason: str):
        super().__init__(reason)
        self.have = have
        self.reason = reason


def _offline_error(url: str, dest: Path, reason: object) -> DownloadError:
    return DownloadError(f"cannot download {url} ({_one_line(reason)}); without network, download it by hand and "
                         f"put it at {dest}")


def _fetch_into(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (Range request when it holds bytes already)."""
    from tqdm import tqdm

    dest = part.with_name(part.name.removesuffix(".part"))
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "actionkit"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part may be complete; the hash decides
            return
        raise _offline_error(url, dest, f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise _offline_error(url, dest, reason) from None
    with response:
        status = getattr(response, "status", 200)
        if have and status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != have:
                have = 0  # an answer for another range: start over
                response.close()
                part.unlink(missing_ok=True)
                return _fetch_into(url, part, timeout=timeout, progress=progress)
            mode = "ab"
        else:
            have, mode = 0, "wb"  # 200: the server ignored the range
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        received = have
        with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                         desc=dest.name, disable=not progress, leave=False) as bar:
            try:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException, socket.timeout) as exc:
                f.flush()
                raise _Interrupted(received, _one_line(exc) or type(exc).__name__) from None
            f.flush()
            os.fsync(f.fileno())
        if total is not None and received < total:
            raise _Interrupted(received, f"connection closed after {received} of {total} bytes")


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _check_and_commit(part: Path, dest: Path, url: str) -> None:
    expected = hash_prefix(dest.name)
    if expected is None:
        _LOG.warning("%s: the file name carries no SHA-256 prefix; the download is not verified", dest.name)
    else:
        actual = sha256_file(part)
        if not actual.startswith(expected):
            part.unlink(missing_ok=True)
            raise ChecksumError(f"{url}: SHA-256 of the download starts with {actual[:len(expected)]}, not with "
                                f"{expected} as its name says; refused and deleted (nothing was cached at {dest})")
    os.replace(part, dest)
    fsync_path(dest.parent)
    if expected is not None:
        st = dest.stat()
        _VERIFIED[(str(dest), st.st_size, st.st_mtime_ns)] = expected


# ------------------------------------------------------------------------------------------------- resolving
def _has_folder(spec: str) -> bool:
    return "/" in spec or "\\" in spec or os.sep in spec


def looks_like_path(spec: str) -> bool:
    """Whether a string that names no existing file was meant as a path (a folder part or a file suffix)."""
    return (_has_folder(spec) or spec.startswith(("~", "."))
            or Path(spec).suffix.lower() in (".pth", ".pt", ".ckpt", ".bin", ".tar", ".pkl", ".py"))


def _zoo_name_entry(spec: str) -> ZooEntry | None:
    return None if _has_folder(spec) else find_model_entry(spec)


def is_checkpoint_reference(spec: str | os.PathLike) -> bool:
    """Whether :func:`resolve_checkpoint` resolves ``spec`` rather than it being read as a local file: an
    http(s) URL, a zoo name, or a string that names no existing file and does not look like a path (an
    unknown name: resolving it reports the close names)."""
    if isinstance(spec, os.PathLike):
        return False
    if is_url(spec):
        return True
    if os.path.exists(spec):
        return False
    return _zoo_name_entry(spec) is not None or not looks_like_path(spec)


def resolve_checkpoint(spec: str | os.PathLike, *, progress: bool = True, timeout: float = DEFAULT_TIMEOUT) -> Path:
    """A local checkpoint file for ``spec``: an existing path is returned as is; an http(s) URL or a zoo name
    gives its cached download (:func:`download_checkpoint`).

    Errors: FileNotFoundError for a path that does not exist; :class:`UnknownModelError` (with close names) for
    a bare name that is neither a file nor in the zoo; :class:`DownloadError` when the download fails."""
    if isinstance(spec, os.PathLike) or os.path.exists(spec):
        path = Path(spec)
        if not path.exists():
            raise FileNotFoundError(f"{path}: checkpoint file not found")
        return path
    if is_url(spec):
        return download_checkpoint(spec, progress=progress, timeout=timeout)
    entry = _zoo_name_entry(spec)
    if entry is not None:
        get_model_entry(spec)  # logs which checkpoint a plain config name stands for
        return download_checkpoint(entry.url, progress=progress, timeout=timeout)
    if looks_like_path(spec):
        raise FileNotFoundError(f"{spec}: checkpoint file not found")
    raise UnknownModelError(spec, close_model_names(spec),
                            f"'{spec}' is neither a checkpoint file nor a model zoo name")
