"""What the report knows about a run, read incrementally from the run directory.

A `RunCache` lives as long as its `Reporter` and is refreshed once per report update. A refresh
reads run.json (small and fixed-size) and only the JSON files it has not read yet: it remembers
which generations are settled (their generation.json read) and rescans only the unsettled ones,
of which a live run has one or two. The cost of a refresh therefore depends on the generation
size, not on how many generations the run already has.

Each individual is kept as a slim `Entry` (what the page, the best-so-far tracking and the run
plots need). Its pair losses are held by its generation only until the generation's plot has been
drawn, so memory per individual stays a few hundred bytes plus its weights.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from lib_pinning.guard import summarize_reasons
from lib_pinning.objectives.levels import LevelVariety
from lib_pinning.store import GenerationRecord, IndividualRecord, RunDirectoryError, RunStore

log = logging.getLogger(__name__)

_INDIVIDUAL_DIR = re.compile(r"^ind-(\d+)$")

# Relative tolerance under which x and x_evaluated count as the same point (JSON round trip).
_FEASIBLE_RTOL = 1e-9


@dataclass
class Entry:
    """One individual as the report needs it."""

    generation: int
    index: int
    status: str
    error: str | None
    fitness: list[float]
    loss: float
    components: dict[str, float]
    prompt: str
    negative_prompt: str
    offsets: list[float]  # x_evaluated: the change of each unit's weight that was rendered
    weights: list[tuple[float, ...]]  # per unit, the weights of its pieces in the rendered prompt
    images: list[str]
    generate_seconds: float | None
    norm: float  # ||x_evaluated||: the second objective of a multi-objective run
    feasible: bool  # False when the size limit projected x before it was rendered
    folder: str  # relative to the run directory
    loss_plot: bool = False  # artifact present
    gif: bool = False  # artifact present
    pending: bool = False  # its artifacts wait for a later report update (the refresh budget)
    row: str = ""  # the page's JSON row, rebuilt when its artifacts are drawn
    degenerate: dict[str, int] = field(default_factory=dict)  # guard reason -> images with it
    degenerate_images: int = 0  # images with any reason
    excluded: bool = False  # degenerate and penalised by the run's guard: never the best
    repeat_of: tuple[int, int] | None = None  # the individual whose batch this one reused (same prompts)
    image_notes: list[list[str]] = field(default_factory=list)  # per image: "name: text" of the objectives
    levels: list[LevelVariety] = field(default_factory=list)  # a hyperbatch's variety per split level
    steps: int | None = None  # the sampler steps of a hyperbatch (its growth plan), None for a plain batch

    @property
    def key(self) -> tuple[int, int]:
        return (self.generation, self.index)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def clean(self) -> bool:
        """Successful and not excluded by the guard: counts in fitness statistics and for the best."""
        return self.ok and not self.excluded

    @property
    def rank(self) -> tuple[bool, float, int, int]:
        """Sort key of "better": batches the guard excluded last, then the optimizer's first fitness
        value, earlier individuals first on ties (the run keeps the first of equal bests)."""
        value = self.fitness[0] if self.fitness else math.inf
        return (self.excluded, value if math.isfinite(value) else math.inf, self.generation, self.index)


@dataclass
class GenerationState:
    number: int
    entries: dict[int, Entry] = field(default_factory=dict)
    record: GenerationRecord | None = None
    # individual index -> its pair losses; released once the generation's plot is drawn.
    pair_values: dict[int, list[float]] = field(default_factory=dict)
    loss_plot: bool = False  # artifact present
    contact_sheet: bool = False  # artifact present
    pending: bool = False  # complete, its artifacts wait for a later report update

    @property
    def complete(self) -> bool:
        """No more individuals will appear: generation.json is written after the strategy update.
        The baseline generation has no generation.json; it is complete with its one individual."""
        if self.number == 0:
            return 0 in self.entries
        return self.record is not None

    def fitness_stats(self) -> tuple[float, float, float]:
        """(min, mean, max) first fitness of the successful, clean batches. generation.json's
        statistics include failed batches' placeholder fitness and the guard's penalty on degenerate
        ones, which would dwarf every real value."""
        record = self.record
        if record is not None and not record.failed and not any(e.excluded for e in self.entries.values()):
            return (record.fitness_min, record.fitness_mean, record.fitness_max)
        values = [e.fitness[0] for e in self.entries.values() if e.clean and e.fitness]
        if not values:
            return (math.nan, math.nan, math.nan)
        return (min(values), sum(values) / len(values), max(values))

    def best(self) -> Entry | None:
        if self.record is not None and self.record.best_index in self.entries:
            return self.entries[self.record.best_index]
        candidates = [e for e in self.entries.values() if e.ok and e.images]
        return min(candidates, key=lambda e: e.rank) if candidates else None


@dataclass
class Changes:
    """What one refresh found that was not known before."""

    # The full records are handed over once, for the per-individual artifacts, and not kept.
    individuals: list[tuple[Entry, IndividualRecord]] = field(default_factory=list)
    completed: list[GenerationState] = field(default_factory=list)
    generation_records: int = 0


class RunCache:
    """The parsed state of one run directory, kept across report updates."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.run: dict[str, Any] = {}
        self.generations: dict[int, GenerationState] = {}
        self.component_names: list[str] = []
        self.best: Entry | None = None
        self._next_generation = 0
        self._unsettled: set[int] = set()

    @property
    def root(self) -> os.PathLike[str]:
        return self.store.root

    @property
    def baseline(self) -> Entry | None:
        gen0 = self.generations.get(0)
        return gen0.entries.get(0) if gen0 is not None else None

    def entries(self) -> list[Entry]:
        """Every individual read so far, in (generation, index) order."""
        out: list[Entry] = []
        for number in sorted(self.generations):
            entries = self.generations[number].entries
            out.extend(entries[i] for i in sorted(entries))
        return out

    def refresh(self) -> Changes:
        changes = Changes()
        try:
            self.run = self.store.read_run()
        except (FileNotFoundError, RunDirectoryError) as e:
            # Keep what was read before: the report must not die on a transient read error.
            log.warning("report: cannot read run.json: %s", e)
        while self.store.generation_dir(self._next_generation).is_dir():
            self.generations[self._next_generation] = GenerationState(self._next_generation)
            self._unsettled.add(self._next_generation)
            self._next_generation += 1
        for number in sorted(self._unsettled):
            state = self.generations[number]
            self._scan_individuals(state, changes)
            if number > 0 and state.record is None:
                self._read_generation(state, changes)
            if state.complete:
                self._unsettled.discard(number)
                changes.completed.append(state)
        return changes

    def _scan_individuals(self, state: GenerationState, changes: Changes) -> None:
        folder = self.store.generation_dir(state.number)
        found: list[int] = []
        with os.scandir(folder) as it:
            for item in it:
                match = _INDIVIDUAL_DIR.match(item.name)
                if match and int(match.group(1)) not in state.entries:
                    found.append(int(match.group(1)))
        for index in sorted(found):
            record = self.store.read_individual(state.number, index)
            if record is None:
                continue  # still being generated, dropped by an interrupt, or unreadable (logged)
            entry = self._entry(record)
            state.entries[index] = entry
            state.pair_values[index] = _pair_values(record)
            for name in entry.components:
                if name not in self.component_names:
                    self.component_names.append(name)
            if entry.ok and entry.fitness and (self.best is None or entry.rank < self.best.rank):
                self.best = entry
            changes.individuals.append((entry, record))

    def _read_generation(self, state: GenerationState, changes: Changes) -> None:
        record = self.store.read_generation(state.number)
        if record is not None:
            state.record = record
            changes.generation_records += 1

    def _entry(self, record: IndividualRecord) -> Entry:
        x = [float(v) for v in record.x]
        evaluated = [float(v) for v in record.x_evaluated]
        feasible = len(x) == len(evaluated) and all(
            math.isclose(a, b, rel_tol=_FEASIBLE_RTOL, abs_tol=1e-12) for a, b in zip(x, evaluated)
        )
        generate = record.timings.get("generate") if isinstance(record.timings, dict) else None
        return Entry(
            generation=int(record.generation),
            index=int(record.index),
            status=str(record.status),
            error=None if record.error is None else str(record.error),
            fitness=[float(v) for v in record.fitness],
            loss=float(record.loss),
            components={str(k): float(v) for k, v in (record.components or {}).items()},
            prompt=str(record.prompt),
            negative_prompt=str(record.negative_prompt),
            offsets=evaluated,
            weights=[_weight_tuple(w) for w in record.weights],
            images=[str(name) for name in record.images],
            generate_seconds=None if generate is None else float(generate),
            norm=math.sqrt(sum(v * v for v in evaluated)),
            feasible=feasible,
            folder=self.store.relative(self.store.individual_dir(record.generation, record.index)),
            degenerate=summarize_reasons(record.degenerate_reasons),
            degenerate_images=sum(bool(r) for r in record.degenerate_reasons),
            excluded=record.excluded,
            repeat_of=None if record.repeat_of is None else (int(record.repeat_of[0]), int(record.repeat_of[1])),
            image_notes=_image_notes(record),
            levels=_levels(record),
            steps=_growth_steps(record),
        )


def _image_notes(record: IndividualRecord) -> list[list[str]]:
    """The objectives' texts for each image (`Evaluation.image_notes`), e.g. a tagger's top tags."""
    notes: list[list[str]] = [[] for _ in record.images]
    for evaluation in (record.objectives or {}).values():
        named = evaluation.get("image_notes") if isinstance(evaluation, dict) else None
        for name, texts in (named or {}).items() if isinstance(named, dict) else ():
            for image, text in zip(notes, texts if isinstance(texts, list) else ()):
                image.append(f"{name}: {text}")
    return notes


def _levels(record: IndividualRecord) -> list[LevelVariety]:
    """The variety per split level an objective recorded (`Evaluation.levels`: the image loss)."""
    for evaluation in (record.objectives or {}).values():
        levels = evaluation.get("levels") if isinstance(evaluation, dict) else None
        if levels and isinstance(levels, list):
            try:
                return [LevelVariety.from_json(level) for level in levels]
            except (KeyError, TypeError, ValueError) as e:
                log.warning("report: ignoring unreadable split levels of individual %s: %s", record.key, e)
    return []


def _growth_steps(record: IndividualRecord) -> int | None:
    steps = record.growth.get("steps") if isinstance(record.growth, dict) else None
    return steps if isinstance(steps, int) else None


def _pair_values(record: IndividualRecord) -> list[float]:
    """Every objective's pair losses together (usually only the FLIP objective has any)."""
    values: list[float] = []
    for evaluation in (record.objectives or {}).values():
        if isinstance(evaluation, dict):
            values.extend(float(v) for v in evaluation.get("pair_values") or [] if _finite(v))
    return values


def _weight_tuple(value: Any) -> tuple[float, ...]:
    """A unit's weight: one number, or one per piece of the unit (PromptSpace.weights)."""
    if isinstance(value, (list, tuple)):
        return tuple(float(v) for v in value)
    return (float(value),)


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
