"""The run directory: layout, record schemas and atomic writes.

    <runs dir>/<run id>/
        run.json                     what was asked (prompts, options, seeds, backend) and where the
                                     run stands (status, best so far); rewritten after each generation
        checkpoint.json              optimizer + RNG state at the start of the next generation
        targets/target-NN.png        the target images (user's, or the baseline batch)
        gen-000/ind-000/             the baseline (x = 0)
        gen-001/ind-003/
            00-<seed>.png ...        the batch
            batch_stats.json         the individual's record; written last, so its presence marks a
                                     complete individual (an interrupted one leaves no record)
        gen-001/generation.json      statistics of the generation, written after the strategy update

Every JSON file is written to a temporary file and renamed over the old one, so a crash or an
interrupt never leaves a half-written file behind: a run directory is always readable.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from lib_pinning.prompt import PromptSpace

SCHEMA_VERSION = 1
RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.json"
INDIVIDUAL_FILE = "batch_stats.json"
GENERATION_FILE = "generation.json"
TARGETS_DIR = "targets"
RESERVE_FILE = ".space-reserve"  # room held for run.json while a run is live (RunStore.hold_reserve)
RESERVE_BYTES = 256 * 1024
# run.json keys a resume needs, with their JSON types.
RUN_KEYS: dict[str, type | tuple[type, ...]] = {
    "options": dict, "space": dict, "seeds": list, "cma_seed": int, "cma": dict, "generator": dict,
    "targets": list,
}
# Temporary files of the atomic writes (".<name>.<random>.tmp" / ".png"), left by a killed process.
_TEMPORARY = re.compile(r"^\..+\.[^.]+\.(tmp|png)$")


log = logging.getLogger(__name__)


RUN_DAMAGED = (
    "run.json holds the run's prompt, options and seeds, which its records alone cannot give back: "
    "restore it from a copy of the run folder, or start a new run (the images in gen-*/ are intact)"
)


class RunDirectoryError(RuntimeError):
    """A directory that is not a (readable) pinning run."""


class StoreError(OSError):
    """Writing the run directory failed (disk full, permissions, a vanished folder). An error of
    the run, not of the individual being saved: the run stops and `resume` redoes what was lost."""


@contextmanager
def _writing(what: Path | str) -> Iterator[None]:
    try:
        yield
    except StoreError:
        raise
    except OSError as e:
        raise StoreError(e.errno, f"cannot write {what}: {e.strerror or e}") from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600; give the file the mode a plain open() would (the WebUI serves it).
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1, allow_nan=False, default=_json_default).encode())


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise RunDirectoryError(f"cannot read {path}: {e}") from e


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] float in [0, 1] -> H x W x 3 uint8."""
    return (image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def save_png(path: Path, image: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        Image.fromarray(to_uint8_image(image)).save(tmp, format="PNG")
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image -> float32 [3, H, W] in [0, 1] (alpha dropped, greyscale expanded)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_png(path: Path) -> torch.Tensor:
    """-> [3, H, W] float32 in [0, 1] (alpha dropped, greyscale expanded)."""
    with Image.open(path) as img:
        return pil_to_tensor(img)


class _JsonRecord:
    """JSON form of a record dataclass: its fields plus the schema version; reading ignores keys a
    newer version added, so an older extension can still read a newer run directory."""

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_json(cls: type[_R], data: dict[str, Any]) -> _R:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})


_R = TypeVar("_R", bound=_JsonRecord)


@dataclass
class IndividualRecord(_JsonRecord):
    """One evaluated individual: the content of its batch_stats.json."""

    generation: int
    index: int
    x: list[float]  # the offsets the optimizer proposed
    x_evaluated: list[float]  # the offsets rendered (differs when the size limit projected x)
    weights: list[list[float]]  # per unit (positive prompt's first), the weights of its pieces as rendered
    prompt: str
    negative_prompt: str
    seeds: list[int]
    fitness: list[float]  # what the optimizer was told (penalties included)
    loss: float  # the weighted objective total, before any size-limit penalty
    objective_values: list[float] = field(default_factory=list)  # the weighted terms summing to loss
    penalty: float = 0.0  # the size limit's closest-valid penalty (0 within the limit)
    components: dict[str, float] = field(default_factory=dict)
    objectives: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> Evaluation JSON
    images: list[str] = field(default_factory=list)  # file names inside the individual's folder
    timings: dict[str, float] = field(default_factory=dict)
    model_rows: int = 0
    growth: dict[str, Any] | None = None
    status: str = "ok"  # "ok" | "failed"
    error: str | None = None
    # The degenerate-image guard's verdict (lib_pinning.guard.GuardVerdict.to_json): per image its
    # reasons ([] for a valid image) and statistics, the share of degenerate images, and whether
    # the run penalised them (the guard option). None: not inspected (a failed or older record).
    guard: dict[str, Any] | None = None
    guard_penalty: float = 0.0  # added to every fitness value for the degenerate images (guard.penalty)
    # [generation, index] of the individual whose rendered prompt pair this one repeated: its result
    # was reused and its images hard-linked (or copied) here, without calling the backend.
    repeat_of: list[int] | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.generation, self.index)

    @property
    def total(self) -> float:
        """What "best" means across a run: the weighted loss plus the size-limit and guard penalties."""
        return self.loss + self.penalty + self.guard_penalty

    @property
    def degenerate_reasons(self) -> list[list[str]]:
        """Per image, why the guard found it degenerate ([] for a valid image; [] for no verdict)."""
        if not isinstance(self.guard, dict):
            return []
        return [[str(r) for r in image] for image in self.guard.get("reasons") or []]

    @property
    def share_degenerate(self) -> float:
        reasons = self.degenerate_reasons
        return sum(bool(r) for r in reasons) / len(reasons) if reasons else 0.0

    @property
    def degenerate(self) -> bool:
        """Any image of the batch is degenerate."""
        return any(self.degenerate_reasons)

    @property
    def excluded(self) -> bool:
        """Degenerate and the run's guard acted on it: never the run's best."""
        return self.degenerate and bool((self.guard or {}).get("penalised"))



@dataclass
class GenerationRecord(_JsonRecord):
    """Statistics of one generation (generation.json), as the CMA plots need them."""

    generation: int
    evaluations: int  # individuals evaluated so far in the run, baseline included
    fitness_min: float
    fitness_mean: float
    fitness_max: float
    fitness_std: float
    best_index: int  # the generation's best individual
    best_so_far: list[int]  # [generation, index] of the run's best up to here
    best_so_far_fitness: float
    best_so_far_x: list[float]
    sigma: float
    axis_ratio: float
    axis_scales: list[float]
    population_std: list[float]
    centroid: list[float]
    seconds: float
    failed: int = 0
    degenerate: int = 0  # individuals with a degenerate image (lib_pinning.guard)
    degenerate_share: float = 0.0  # share of the generation's images that are degenerate
    repeats: int = 0  # individuals that repeated an already generated prompt pair (no batch generated)


def _record_or_none(cls: type[_R], path: Path) -> _R | None:
    """The record in `path`, or None (with a warning) when it is unreadable or of the wrong shape:
    it is redone, never a traceback in `resume` or `report`."""
    try:
        data = read_json(path)
        if not isinstance(data, dict):
            raise RunDirectoryError(f"{path} is not a record")
        return cls.from_json(data)
    except FileNotFoundError:  # removed since it was listed: missing, not unreadable
        return None
    except (RunDirectoryError, TypeError) as e:
        log.warning("ignoring unreadable %s (%s): it will be redone", path, e)
        return None


_RUN_NAME = re.compile(r"^(\d{5})-")


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def create(cls, runs_dir: Path) -> RunStore:
        """A new numbered run directory `NNNNN-YYYYmmdd-HHMMSS` under `runs_dir`."""
        runs_dir = Path(runs_dir)
        runs_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for p in runs_dir.iterdir() if (m := _RUN_NAME.match(p.name))]
        number = max(numbers, default=-1) + 1
        stamp = time.strftime("%Y%m%d-%H%M%S")
        while True:
            root = runs_dir / f"{number:05d}-{stamp}"
            try:
                root.mkdir()
                return cls(root)
            except FileExistsError:
                number += 1

    @classmethod
    def open(cls, root: Path) -> RunStore:
        store = cls(Path(root))
        if not (store.root / RUN_FILE).is_file():
            raise RunDirectoryError(f"{root} is not a pinning run directory (no {RUN_FILE})")
        return store

    @property
    def run_id(self) -> str:
        return self.root.name

    # run.json / checkpoint.json --------------------------------------------------------------------

    def write_run(self, data: dict[str, Any]) -> None:
        """run.json, atomically; on a full disk the reserve (`hold_reserve`) is given up for it, so
        a run that fills the disk can still record how it ended."""
        path, content = self.root / RUN_FILE, {"schema_version": SCHEMA_VERSION, **data}
        with _writing(path):
            try:
                atomic_write_json(path, content)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not self.release_reserve():
                    raise
                atomic_write_json(path, content)

    def hold_reserve(self) -> None:
        """Set aside RESERVE_BYTES for run.json's last write (a full disk must not leave it "running");
        best effort: without room for it the run goes on without."""
        try:
            (self.root / RESERVE_FILE).write_bytes(bytes(RESERVE_BYTES))
        except OSError:
            (self.root / RESERVE_FILE).unlink(missing_ok=True)

    def release_reserve(self) -> bool:
        """Delete the reserve; True if there was one."""
        try:
            (self.root / RESERVE_FILE).unlink()
            return True
        except FileNotFoundError:
            return False

    def read_run(self, required: Sequence[str] = ()) -> dict[str, Any]:
        """run.json, which must be a JSON object with the `required` keys (RUN_KEYS: what resuming
        needs); anything else is a RunDirectoryError, not a TypeError deep inside a caller."""
        path = self.root / RUN_FILE
        try:
            data = read_json(path)
        except RunDirectoryError as e:
            raise RunDirectoryError(f"{e}; {RUN_DAMAGED}") from e
        if not isinstance(data, dict):
            raise RunDirectoryError(
                f"{path} is not a pinning run record (a JSON object), it holds {type(data).__name__}; {RUN_DAMAGED}"
            )
        missing = [key for key in required if not isinstance(data.get(key), RUN_KEYS.get(key, object))]
        if missing:
            raise RunDirectoryError(f"{path} lacks what a run record needs: {', '.join(missing)}; {RUN_DAMAGED}")
        return data

    def write_checkpoint(self, data: dict[str, Any]) -> None:
        with _writing(self.root / CHECKPOINT_FILE):
            atomic_write_json(self.root / CHECKPOINT_FILE, data)

    def read_checkpoint(self) -> dict[str, Any] | None:
        path = self.root / CHECKPOINT_FILE
        return read_json(path) if path.is_file() else None

    # individuals ------------------------------------------------------------------------------------

    def generation_dir(self, generation: int) -> Path:
        return self.root / f"gen-{generation:03d}"

    def individual_dir(self, generation: int, index: int) -> Path:
        return self.generation_dir(generation) / f"ind-{index:03d}"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def summary_of(self, record: IndividualRecord | None, space: PromptSpace | None = None) -> dict[str, Any] | None:
        """How run.json names an individual (its best and baseline): where it is and what it scored.
        With the run's `space`, also the prompts as shown to a person (PromptSpace.display)."""
        if record is None:
            return None
        summary = {
            "generation": record.generation,
            "index": record.index,
            "fitness": record.fitness,
            "loss": record.loss,
            "prompt": record.prompt,
            "negative_prompt": record.negative_prompt,
            "path": self.relative(self.individual_dir(record.generation, record.index)),
        }
        if space is not None:
            summary["shown_prompt"], summary["shown_negative_prompt"] = space.display(record.x_evaluated)
        return summary

    def save_batch_images(self, generation: int, index: int, images: torch.Tensor, seeds: Sequence[int]) -> list[str]:
        folder = self.individual_dir(generation, index)
        names = []
        with _writing(folder):
            for i, (image, seed) in enumerate(zip(images, seeds)):
                name = f"{i:02d}-{seed}.png"
                save_png(folder / name, image)
                names.append(name)
        return names

    def link_batch_images(self, source: IndividualRecord, generation: int, index: int) -> list[str]:
        """Give individual (generation, index) the images of `source` (a repeat of it): hard links,
        which cost no disk space, or copies where the file system has none."""
        folder = self.individual_dir(generation, index)
        origin = self.individual_dir(source.generation, source.index)
        with _writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
            for name in source.images:
                target = folder / name
                if target.exists():
                    target.unlink()
                try:
                    os.link(origin / name, target)
                except OSError:
                    shutil.copyfile(origin / name, target)
        return list(source.images)

    def load_batch_images(self, record: IndividualRecord) -> torch.Tensor:
        folder = self.individual_dir(record.generation, record.index)
        return torch.stack([load_png(folder / name) for name in record.images])

    def write_individual(self, record: IndividualRecord) -> None:
        path = self.individual_dir(record.generation, record.index) / INDIVIDUAL_FILE
        with _writing(path):
            atomic_write_json(path, record.to_json())

    def read_individual(self, generation: int, index: int) -> IndividualRecord | None:
        """The individual's record; None when it is missing or unreadable (it is then redone)."""
        path = self.individual_dir(generation, index) / INDIVIDUAL_FILE
        if not path.is_file():
            return None
        return _record_or_none(IndividualRecord, path)

    def iter_individuals(self) -> Iterator[IndividualRecord]:
        """Every complete, readable individual, in (generation, index) order."""
        for path in sorted(self.root.glob(f"gen-*/ind-*/{INDIVIDUAL_FILE}")):
            record = _record_or_none(IndividualRecord, path)
            if record is not None:
                yield record

    def remove_temporaries(self) -> int:
        """Delete the temporary files of writes a killed process never finished; returns how many.
        Only for a run no process is writing (resume), since a live write's file looks the same."""
        removed = 0
        for path in self.root.rglob(".*"):
            if path.is_file() and _TEMPORARY.match(path.name):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # generations ---------------------------------------------------------------------------------

    def write_generation(self, record: GenerationRecord) -> None:
        path = self.generation_dir(record.generation) / GENERATION_FILE
        with _writing(path):
            atomic_write_json(path, record.to_json())

    def read_generation(self, generation: int) -> GenerationRecord | None:
        """The generation's summary; None when it is missing or unreadable (resume then redoes it)."""
        path = self.generation_dir(generation) / GENERATION_FILE
        return _record_or_none(GenerationRecord, path) if path.is_file() else None

    def iter_generations(self) -> Iterator[GenerationRecord]:
        """Every readable generation summary, in order."""
        for path in sorted(self.root.glob(f"gen-*/{GENERATION_FILE}")):
            record = _record_or_none(GenerationRecord, path)
            if record is not None:
                yield record

    # targets -------------------------------------------------------------------------------------

    def save_targets(self, images: torch.Tensor) -> list[str]:
        names = []
        with _writing(self.root / TARGETS_DIR):
            for i, image in enumerate(images):
                name = f"{TARGETS_DIR}/target-{i:02d}.png"
                save_png(self.root / name, image)
                names.append(name)
        return names

    def load_targets(self, names: Sequence[str]) -> torch.Tensor:
        return torch.stack([load_png(self.root / name) for name in names])

    def save_masks(self, masks: torch.Tensor) -> list[str]:
        """Masks [T, H, W] in [0, 1] as greyscale PNGs beside the targets."""
        names = []
        with _writing(self.root / TARGETS_DIR):
            for i, mask in enumerate(masks):
                name = f"{TARGETS_DIR}/mask-{i:02d}.png"
                save_png(self.root / name, mask.expand(3, -1, -1))
                names.append(name)
        return names

    def load_masks(self, names: Sequence[str]) -> torch.Tensor:
        return torch.stack([load_png(self.root / name)[0] for name in names])
