"""Where WD14 tagger models come from: the WebUI's tagger folders, our models folder, or a download.

A WD14 tagger is two files: ``model.onnx`` and ``selected_tags.csv`` (SmilingWolf's Hugging Face
repositories, one per model). `locate_tagger` looks for them in this order:

1. A folder given as the model name (any folder holding one ``.onnx`` file and ``selected_tags.csv``:
   a fine-tuned or converted tagger).
2. The folders of the WebUI's WD14 tagger extension, when the WebUI is running: its ONNX folder
   (``models/TaggerOnnx/<name>/``, or ``--onnxtagger-path``) and its Hugging Face cache
   (``models/interrogators/``, or the ``tagger_hf_cache_dir`` setting), which keeps the files at
   ``models--SmilingWolf--<name>/snapshots/<revision>/``. Nothing is downloaded twice.
3. Our models folder: ``<models dir>/taggers/<name>/``.
4. A download into that folder (verified, resumable: `lib_pinning.objectives.weights`).

Integrity: files found in the WebUI's folders or placed by hand are the user's and are trusted on
first use (their hash is recorded beside them and later changes are refused). A download needs a
pinned SHA-256 and is made from the pinned revision (Hugging Face's ``resolve/<commit>``), so the
bytes cannot change under the pin. The v3 models are pinned (`_V3_SOURCE`: the hashes come from
public projects' model registries, where several agree, not from a download of our own); the v1.4
models are not yet, and their download is refused with a message saying where to put the files.
Pinning a hash in `TAGGERS` turns the download on for that model; a wrong pin is a clear refusal
(`WeightsHashError`), never a file kept.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from lib_pinning.objectives.weights import (
    WeightsFile,
    WeightsUnavailableError,
    default_models_dir,
    ensure_weights,
    verify_file,
)

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
TAGGERS_SUBDIR = "taggers"
HF_ORG = "SmilingWolf"


@dataclass(frozen=True)
class TaggerSpec:
    """A known tagger: its repository, the revision its pins hold for, and the two files' pinned
    hashes and sizes (None: not pinned yet)."""

    name: str
    repo: str
    model_sha256: str | None = None
    tags_sha256: str | None = None
    source: str = ""
    revision: str = "main"
    model_size: int | None = None
    tags_size: int | None = None

    def files(self, base_url: str = "https://huggingface.co") -> tuple[WeightsFile, WeightsFile]:
        """The model and tag list as downloadable files (Hugging Face's `resolve` URLs)."""
        root = f"{base_url.rstrip('/')}/{self.repo}/resolve/{self.revision}"
        return (
            WeightsFile(MODEL_FILE, f"{root}/{MODEL_FILE}", self.model_sha256, self.model_size, source=self.source),
            WeightsFile(TAGS_FILE, f"{root}/{TAGS_FILE}", self.tags_sha256, self.tags_size, source=self.source),
        )


def _spec(name: str) -> TaggerSpec:
    return TaggerSpec(name, f"{HF_ORG}/{name}")


# Every v3 repository ships the same tag list (10,861 tags): one file, one hash.
_V3_TAGS_SHA256 = "298633d94d0031d2081c0893f29c82eab7f0df00b08483ba8f29d1e979441217"
_V3_TAGS_SIZE = 308_468
_V3_SOURCE = (
    "the Hugging Face LFS SHA-256 of model.onnx and the SHA-256 of selected_tags.csv in {repo} at "
    "revision {revision}, as pinned (with the same sizes) by several public projects' tagger "
    "registries found by searching public code for these models"
)


def _v3(name: str, revision: str, model_sha256: str, model_size: int) -> TaggerSpec:
    repo = f"{HF_ORG}/{name}"
    return TaggerSpec(
        name, repo, model_sha256, _V3_TAGS_SHA256, source=_V3_SOURCE.format(repo=repo, revision=revision),
        revision=revision, model_size=model_size, tags_size=_V3_TAGS_SIZE,
    )


# The v3 family (448 px, trained on Danbooru up to 2024-02) and the v1.4 models (448 px, v2 weights).
TAGGERS: Mapping[str, TaggerSpec] = {
    s.name: s
    for s in (
        _v3("wd-vit-tagger-v3", "7f6b584d0bd3f55c4531f14ba3d4761b2bccdc0f",
            "35f23693620b668f4d53fd3c62bf65e40af739bc52c7eb0fbc49258b58d065b6", 378_536_310),
        _v3("wd-swinv2-tagger-v3", "627aef95638667ddcaa3ac8ae625e88ea5b02f51",
            "e6774bff34d43bd49f75a47db4ef217dce701c9847b546523eb85ff6dbba1db1", 467_460_978),
        _v3("wd-convnext-tagger-v3", "d39e46de298d27340111b64965e20b8185c407e6",
            "1b8a7abf13d9b8368267df47501d523789c4aeae66b2296ad98483239dfa32eb", 394_990_732),
        _v3("wd-vit-large-tagger-v3", "ae469aa2e4706a3af08d3673cf73a11d1add314c",
            "e4c8001b000a6c98f2db10794f7c406daa79873d071d6ca924330fa053fa1845", 1_260_645_673),
        _v3("wd-eva02-large-tagger-v3", "b25b82a03f7282e41aa2f257a52c7583b710bd1c",
            "9e768793060c7939b277ccb382783e8670e8a042d29d77aa736be0c8cc898bfc", 1_260_435_999),
        _spec("wd-v1-4-vit-tagger-v2"),
        _spec("wd-v1-4-swinv2-tagger-v2"),
        _spec("wd-v1-4-convnextv2-tagger-v2"),
        _spec("wd-v1-4-convnext-tagger-v2"),
        _spec("wd-v1-4-moat-tagger-v2"),
    )
}
DEFAULT_TAGGER = "wd-vit-tagger-v3"


class TaggerNotFoundError(WeightsUnavailableError):
    """The tagger's files are nowhere on disk and cannot be downloaded; the message says where to put them."""


@dataclass(frozen=True)
class TaggerFiles:
    """A located tagger: its ONNX model and its tag list."""

    name: str
    model: Path
    tags: Path


def webui_tagger_dirs() -> list[Path]:
    """The WD14 tagger extension's model folders, when running inside the WebUI (else none).

    Read from the WebUI's own modules only if they are already imported: outside the WebUI this
    never imports anything.
    """
    paths = sys.modules.get("modules.paths")
    shared = sys.modules.get("modules.shared")
    models_path = getattr(paths, "models_path", None) or getattr(shared, "models_path", None)
    found: list[Path] = []
    onnx_dir = getattr(getattr(shared, "cmd_opts", None), "onnxtagger_path", None)
    hf_cache = getattr(getattr(shared, "opts", None), "tagger_hf_cache_dir", None)
    for configured in (onnx_dir, hf_cache):
        if configured:
            found.append(Path(configured))
    if models_path:
        found += [Path(models_path) / "TaggerOnnx", Path(models_path) / "interrogators"]
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def _complete(folder: Path) -> tuple[Path, Path] | None:
    """(model, tags) in `folder` if it holds exactly one .onnx file and selected_tags.csv."""
    if not folder.is_dir():
        return None
    tags = folder / TAGS_FILE
    models = sorted(p for p in folder.glob("*.onnx") if p.is_file())
    if tags.is_file() and len(models) == 1:
        return models[0], tags
    return None


def _candidates(name: str, roots: Iterable[Path]) -> Iterable[Path]:
    """Folders that may hold tagger `name` under the WebUI tagger roots."""
    for root in roots:
        yield root / name
        # huggingface_hub's cache layout: models--<org>--<repo>/snapshots/<revision>/
        spec = TAGGERS.get(name)
        repo = spec.repo if spec else f"{HF_ORG}/{name}"
        snapshots = root / ("models--" + repo.replace("/", "--")) / "snapshots"
        if snapshots.is_dir():
            yield from sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)


def looks_like_path(name: str) -> bool:
    """Whether a tagger name is a folder (a path or an existing directory) rather than a model name."""
    return Path(name).expanduser().is_dir() or os.sep in name or bool(os.altsep and os.altsep in name)


def locate_tagger(
    name: str,
    models_dir: str | os.PathLike[str] | None = None,
    *,
    search_dirs: Iterable[Path] | None = None,
    download: bool = True,
    base_url: str = "https://huggingface.co",
    catalogue: Mapping[str, TaggerSpec] = TAGGERS,
) -> TaggerFiles:
    """Find (or download) tagger `name`; see the module docstring for the order.

    search_dirs: the WebUI tagger roots to look in (default: `webui_tagger_dirs()`).
    """
    given = Path(name).expanduser()
    if looks_like_path(name):
        files = _complete(given)
        if files is None:
            raise TaggerNotFoundError(
                f"Tagger folder {given} must hold exactly one .onnx model and {TAGS_FILE}"
            )
        return _verified(given.name, *files)
    roots = list(webui_tagger_dirs() if search_dirs is None else search_dirs)
    for folder in _candidates(name, roots):
        files = _complete(folder)
        if files is not None:
            logger.info("Using the tagger %s from %s", name, folder)
            return _verified(name, *files)
    ours = Path(models_dir).expanduser() if models_dir else default_models_dir()
    ours = ours / TAGGERS_SUBDIR / name
    files = _complete(ours)
    spec = catalogue.get(name)
    if spec is None:
        known = ", ".join(sorted(catalogue))
        if files is not None:
            return _verified(name, *files)
        raise TaggerNotFoundError(
            f"Unknown tagger {name!r}: use one of {known}, or the path of a folder holding "
            f"{MODEL_FILE} and {TAGS_FILE}"
        )
    model_spec, tags_spec = spec.files(base_url)
    pinned = spec.model_sha256 is not None and spec.tags_sha256 is not None
    if files is not None and not (pinned and files[0].name == MODEL_FILE):
        return _verified(name, *files)
    if not pinned:
        raise TaggerNotFoundError(
            f"The tagger {name} is not on this machine and no SHA-256 is pinned for its files, so it "
            f"is not downloaded automatically. Download {model_spec.url} and {tags_spec.url} and put "
            f"them in {ours} (or install the WebUI's WD14 tagger extension and tag one image with "
            f"{name}); files placed by hand are trusted on first use and their hashes recorded."
            + (f" Looked in: {', '.join(str(r) for r in roots)}." if roots else "")
        )
    return TaggerFiles(name, _ensure(model_spec, ours, download), _ensure(tags_spec, ours, download))


def _ensure(spec: WeightsFile, folder: Path, download: bool) -> Path:
    return ensure_weights(spec, folder, download=download, progress=False)


def _verified(name: str, model: Path, tags: Path) -> TaggerFiles:
    """A found tagger, its files checked against the hashes recorded on first use."""
    verify_file(model)
    verify_file(tags)
    return TaggerFiles(name, model, tags)
