"""Model weights on disk: find, download, verify and load them without running anyone's code.

Learned objectives need files nobody ships with the extension (CLIP, the aesthetic head). Each is
described by a `WeightsFile`: its file name in the models directory, where to download it, and
its SHA-256. Files are looked up in the models directory first (inside the WebUI its models
folder; users may drop files there by hand), and downloaded there on first use otherwise.

Integrity:
* A pinned hash (established from a public source, recorded in `WeightsFile.source`) is checked
  for every file, downloaded or placed by hand.
* Without a pinned hash the first file seen is trusted and its hash recorded in a small JSON file
  beside it (`<name>.sha256.json`); a later file with another hash is refused ("trust on first
  use"). Deleting the weights keeps the record, so a re-download is held to the first one.
* The JSON record also remembers the size and modification time of a verified file, so a 1.7 GB
  checkpoint is hashed once rather than at every run.

Downloads stream into `<name>.part` (hashing as they go), are verified, and only then renamed to
the real name: an interrupted or wrong download never looks like a finished file. An interrupted
download resumes from the partial file with an HTTP range request when the server supports it;
the final hash covers the whole file either way. A wrong hash removes the partial file.

Loading never unpickles arbitrary objects: safetensors files are read as such, anything else goes
through `torch.load(..., weights_only=True)`, whose unpickler only builds tensors and plain
containers and refuses everything else before it runs.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import pickle
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

logger = logging.getLogger(__name__)

RECORD_SUFFIX = ".sha256.json"
PART_SUFFIX = ".part"
DEFAULT_TIMEOUT = 60.0
"""Seconds a connection may stay silent (per read, not for the whole file) before the download fails."""

_CHUNK = 1 << 20
MODELS_DIR_ENV = "PROMPT_PINNING_MODELS_DIR"


class WeightsError(RuntimeError):
    """Base class of every weights problem; the message says what to do."""


class WeightsUnavailableError(WeightsError):
    """The file is not on disk and could not be downloaded (offline, server error, interrupted)."""


class WeightsHashError(WeightsError):
    """A file's SHA-256 differs from the pinned or the first-seen hash."""


class UnsafeWeightsError(WeightsError):
    """A weights file holds pickled Python objects that are not plain tensors: refused, never run."""


@dataclass(frozen=True)
class WeightsFile:
    """One downloadable weights file.

    filename: its name in the models directory.
    url: where it is downloaded from (pin an immutable revision where the host has them).
    sha256: the expected SHA-256 (lowercase hex), or None to trust the first file seen.
    size: the expected size in bytes if known (lets a download fail before it starts).
    source: where the pinned hash was established, for the error messages and the docs.
    """

    filename: str
    url: str
    sha256: str | None = None
    size: int | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not self.filename or Path(self.filename).name != self.filename:
            raise ValueError(f"filename must be a bare file name, got {self.filename!r}")
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"only http(s) downloads are supported, got {self.url!r}")
        if self.sha256 is not None:
            digest = self.sha256.lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"sha256 must be 64 hex digits, got {self.sha256!r}")
            object.__setattr__(self, "sha256", digest)


def default_models_dir() -> Path:
    """Where weights go when no models directory is configured: $PROMPT_PINNING_MODELS_DIR, else
    ~/.cache/sd-prompt-pinning (the WebUI passes its own models folder instead)."""
    configured = os.environ.get(MODELS_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "sd-prompt-pinning"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def record_path(path: Path) -> Path:
    """The JSON file beside `path` that records its verified hash."""
    return path.with_name(path.name + RECORD_SUFFIX)


def read_record(path: Path) -> dict[str, Any] | None:
    """The recorded hash of `path` ({"sha256", "size", "mtime_ns", ...}), None if there is none.

    An unreadable record is an error rather than "no record": silently ignoring it would turn a
    trust-on-first-use file back into an unverified one.
    """
    rec = record_path(path)
    if not rec.exists():
        return None
    try:
        data = json.loads(rec.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("sha256"), str):
            raise ValueError("no sha256 entry")
        return data
    except (OSError, ValueError) as exc:
        raise WeightsError(
            f"the hash record {rec} is unreadable ({exc}); delete it only if you trust {path.name}"
        ) from exc


def write_record(path: Path, sha256: str, **extra: Any) -> None:
    """Record `path`'s verified hash, size and mtime beside it (atomically)."""
    stat = path.stat()
    data = {"file": path.name, "sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **extra}
    rec = record_path(path)
    tmp = rec.with_name(rec.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, rec)


def verify_file(path: Path, expected: str | None = None, *, url: str = "", source: str = "") -> str:
    """Check a file on disk against the pinned hash (or, without one, the recorded first-seen hash).

    Returns the file's SHA-256. A file whose size and mtime match a record of an earlier successful
    check is not hashed again. Never deletes the file: it may be the user's.
    """
    path = Path(path)
    record = read_record(path)
    stat = path.stat()
    if (
        record is not None
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
        and (expected is None or record["sha256"] == expected)
    ):
        return str(record["sha256"])
    want = expected or (record["sha256"] if record is not None else None)
    actual = sha256_of(path)
    if want is not None and actual != want:
        how = f"pinned from {source}" if expected and source else ("pinned" if expected else "recorded on first use")
        raise WeightsHashError(
            f"{path} has SHA-256 {actual}, but {want} was expected ({how}). The file is damaged or a "
            f"different version: delete it to have it downloaded again"
            + (f", or replace it with the file from {url}" if url else "")
            + "."
        )
    if want is None:
        logger.warning(
            "No pinned hash for %s: trusting it on first use and recording SHA-256 %s in %s",
            path,
            actual,
            record_path(path),
        )
    write_record(path, actual, pinned=expected is not None, url=url)
    return actual


def ensure_weights(
    spec: WeightsFile,
    models_dir: str | os.PathLike[str],
    *,
    download: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> Path:
    """The verified local path of `spec` in `models_dir`, downloading it first if needed."""
    directory = Path(models_dir).expanduser()
    target = directory / spec.filename
    if target.exists():
        if not target.is_file():
            raise WeightsError(f"{target} exists but is not a file")
        verify_file(target, spec.sha256, url=spec.url, source=spec.source)
        return target
    if not download:
        raise WeightsUnavailableError(_missing_message(spec, target, "downloads are turned off"))
    directory.mkdir(parents=True, exist_ok=True)
    record = read_record(target)
    expected = spec.sha256 or (record["sha256"] if record is not None else None)
    digest = download_file(
        spec.url, target, expected_sha256=expected, expected_size=spec.size, timeout=timeout, progress=progress
    )
    if expected is None:
        logger.warning(
            "No pinned hash for %s: trusting the download on first use and recording SHA-256 %s in %s",
            spec.filename,
            digest,
            record_path(target),
        )
    write_record(target, digest, pinned=spec.sha256 is not None, url=spec.url)
    return target


def _missing_message(spec: WeightsFile, target: Path, reason: str) -> str:
    digest = f" Its SHA-256 must be {spec.sha256}." if spec.sha256 else ""
    return (
        f"{spec.filename} is not in {target.parent} and could not be downloaded from {spec.url} "
        f"({reason}). Download it on a machine with internet access and put it at {target}.{digest}"
    )


def download_file(
    url: str,
    target: Path,
    *,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> str:
    """Download `url` to `target` through `<target>.part`; returns the SHA-256 of the file.

    Resumes an existing `.part` with a range request (a server that ignores the range just sends
    the whole file again). On a hash mismatch the partial file is removed and WeightsHashError
    raised; on a network failure the partial file is kept for the next attempt and
    WeightsUnavailableError raised, naming the file, the URL and the directory.
    """
    target = Path(target)
    part = target.with_name(target.name + PART_SUFFIX)
    spec = WeightsFile(target.name, url, expected_sha256, expected_size)
    for attempt in range(2):
        offset = part.stat().st_size if part.exists() else 0
        try:
            digest, complete = _stream(url, part, offset, expected_size, timeout, progress)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset and attempt == 0:
                # The partial file is as long as (or longer than) the file: start over.
                part.unlink(missing_ok=True)
                continue
            raise WeightsUnavailableError(_missing_message(spec, target, f"HTTP {exc.code} {exc.reason}")) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise WeightsUnavailableError(_missing_message(spec, target, str(reason))) from exc
        if not complete:
            raise WeightsUnavailableError(
                _missing_message(spec, target, f"the transfer stopped after {part.stat().st_size} bytes; "
                                 "run again to resume it")
            )
        break
    if expected_sha256 is not None and digest != expected_sha256:
        part.unlink(missing_ok=True)
        raise WeightsHashError(
            f"the download of {url} has SHA-256 {digest}, but {expected_sha256} was expected; the "
            f"partial file was removed. The server sent a different file (a proxy's error page, a "
            f"changed upload): check the URL, or put the right file at {target} yourself."
        )
    os.replace(part, target)
    return digest


def _stream(
    url: str, part: Path, offset: int, expected_size: int | None, timeout: float, progress: bool
) -> tuple[str, bool]:
    """Fetch url into part (appending from `offset` when the server honours a range)."""
    from tqdm import tqdm  # the WebUI and open_clip both bring tqdm; imported only when downloading

    headers = {"User-Agent": "sd-prompt-pinning"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked)
        status = getattr(response, "status", 200)
        digest = hashlib.sha256()
        if offset and status == 206:
            mode = "ab"
            with open(part, "rb") as existing:
                for block in iter(lambda: existing.read(_CHUNK), b""):
                    digest.update(block)
        else:
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            part.unlink(missing_ok=True)
            raise WeightsHashError(
                f"{url} offers {total} bytes but {part.name[: -len(PART_SUFFIX)]} has {expected_size}: "
                "not the expected file (a proxy's error page?)"
            )
        logger.info("Downloading %s to %s", url, part.parent)
        received = offset
        with open(part, mode) as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[: -len(PART_SUFFIX)],
            disable=not progress,
        ) as bar:
            while True:
                try:
                    block = response.read(_CHUNK)
                except http.client.IncompleteRead as exc:
                    block = exc.partial
                    out.write(block)
                    digest.update(block)
                    return digest.hexdigest(), False
                except (socket.timeout, TimeoutError):
                    return digest.hexdigest(), False
                if not block:
                    break
                out.write(block)
                digest.update(block)
                received += len(block)
                bar.update(len(block))
        return digest.hexdigest(), total is None or received == total


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} state dict from a safetensors file or a tensor-only torch pickle.

    Nothing in the file is executed: a pickle that asks for any Python object beyond tensors and
    plain containers raises UnsafeWeightsError before that object is built.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise WeightsError(
                f"{path} is not a readable safetensors file ({exc}): delete it (it is downloaded or "
                "converted again) or replace it with the published file"
            ) from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeWeightsError(
            f"refusing to load {path}: it is a pickle holding Python objects other than tensors, "
            f"which could run code when loaded. Only safetensors files and plain tensor state dicts "
            f"are accepted. ({str(exc).splitlines()[0]})"
        ) from exc
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise WeightsError(f"{path} does not hold a state dict of named tensors")
    return dict(obj)
