"""Synthetic run directories for the report's tests and benchmark.

Written with the real `RunStore` and record dataclasses, so the report reads exactly what a run
writes: random small images, pair losses shaped like an all-pairs FLIP evaluation (targets first,
then the batch), failed individuals, multi-objective runs with projected (infeasible) points, and
interrupted runs (a last generation without generation.json, status left at "running").
"""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch

from lib_pinning.objectives.base import Evaluation
from lib_pinning.store import GenerationRecord, IndividualRecord, RunStore
from lib_pinning.tally import summarize_generation

HOSTILE = "</script><img src=x onerror=alert(1)>"
QUOTES = "\"'&<>"
# If either payload ran, it would leave a mark the browser test looks for.
TITLE_PAYLOAD = "<img src=x onerror=\"document.title='PWNED'\">"
ELEMENT_PAYLOAD = "<script>document.body.setAttribute('data-pwned','1')</script>"

DEFAULT_UNITS = ["a red", "apple", HOSTILE, QUOTES, TITLE_PAYLOAD]
DEFAULT_NEGATIVE_UNITS = ["blurry", ELEMENT_PAYLOAD]


def emphasis(units: Sequence[str], weights: Sequence[float]) -> str:
    return ", ".join(f"({u}:{w:.2f})" for u, w in zip(units, weights))


class SyntheticRun:
    """Builds a run directory generation by generation, as `PinningRun` would."""

    def __init__(
        self,
        root: Path,
        *,
        lambda_: int = 4,
        batch: int = 3,
        size: int = 16,
        units: Sequence[str] = DEFAULT_UNITS,
        negative_units: Sequence[str] = DEFAULT_NEGATIVE_UNITS,
        multi_objective: bool = False,
        size_limit: float = 0.3,
        generations: int = 3,
        seed: int = 0,
        space: Any = "default",
        targets: int | None = None,
        nested_weights: bool = True,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.store = RunStore(root)
        self.rng = np.random.default_rng(seed)
        self.lambda_ = lambda_
        self.batch = batch
        self.size = size
        self.units = list(units)
        self.negative_units = list(negative_units)
        self.dim = len(self.units) + len(self.negative_units)
        self.base = np.ones(self.dim)
        self.multi = multi_objective
        self.size_limit = size_limit
        self.seeds = [1000 + i for i in range(batch)]
        self.records: list[IndividualRecord] = []
        self.generation_records: list[GenerationRecord] = []
        self.best: IndividualRecord | None = None
        self.evaluations = 0
        self.n_targets = batch if targets is None else targets
        self.nested_weights = nested_weights
        if space == "default":
            # The shape of lib_pinning.prompt.PromptSpace.to_json (its parse trees left empty).
            space = {
                "format": 1,
                "granularity": "word",
                "prompt": {"source": ", ".join(self.units), "negative": False, "granularity": "word", "pieces": []},
                "negative_prompt": {
                    "source": ", ".join(self.negative_units), "negative": True, "granularity": "word", "pieces": [],
                },
                "units": [
                    {"index": i, "prompt": side, "text": text, "base_weights": [1.0]}
                    for i, (side, text) in enumerate(
                        [("positive", u) for u in self.units] + [("negative", u) for u in self.negative_units]
                    )
                ],
            }
        self.info: dict[str, Any] = {
            "run_id": root.name,
            "version": "0.1.0",
            "created": "2026-11-02 10:00:00",
            "status": "running",
            "prompt": ", ".join(self.units),
            "negative_prompt": ", ".join(self.negative_units),
            "options": {
                "granularity": "word",
                "flip_loss": "all_pairs",
                "initial_std": 0.05,
                "size_limit": size_limit if multi_objective else 0.0,
                "generations": generations,
                "target_images": [],
                "cma_seed": None,
                "note_" + QUOTES: HOSTILE,
            },
            "space": space,
            "seeds": self.seeds,
            "cma_seed": 7,
            "cma": {
                "dim": self.dim,
                "generations": generations,
                "lambda": lambda_,
                "mu": lambda_ // 2,
                "multi_objective": multi_objective,
            },
            "generator": {"backend": "synthetic", "steps": 4, "note": HOSTILE},
            "targets": [],
            "generations_done": 0,
            "evaluations": 0,
            "best": None,
            "baseline": None,
            "error": None,
        }
        self.store.write_run(self.info)

    # records ----------------------------------------------------------------------------------

    def _images(self) -> torch.Tensor:
        base = torch.from_numpy(self.rng.random((1, 3, self.size, self.size), dtype=np.float32))
        noise = torch.from_numpy(self.rng.random((self.batch, 3, self.size, self.size), dtype=np.float32))
        return (0.7 * base + 0.3 * noise).clamp(0, 1)

    def _evaluation(self, scale: float) -> Evaluation:
        n = self.n_targets + self.batch
        pairs = list(itertools.combinations(range(n), 2))
        values = (scale * (0.5 + self.rng.random(len(pairs)))).tolist()
        mean, std = float(np.mean(values)), float(np.std(values))
        return Evaluation(
            value=mean + std,
            components={"flip_mean": mean, "flip_std": std},
            pair_values=values,
            pairs=pairs,
            per_image={"brightness": self.rng.random(self.batch).tolist()},
        )

    def individual(
        self, generation: int, index: int, *, failed: bool = False, x: np.ndarray | None = None
    ) -> IndividualRecord:
        if x is None:
            x = np.zeros(self.dim) if generation == 0 else self.rng.normal(0, 0.15, self.dim)
        evaluated = x.copy()
        if self.multi and np.linalg.norm(x) > self.size_limit:
            evaluated = x * (self.size_limit / np.linalg.norm(x))  # the size limit's projection
        weights = self.base + evaluated
        n = len(self.units)
        record = IndividualRecord(
            generation=generation,
            index=index,
            x=x.tolist(),
            x_evaluated=evaluated.tolist(),
            # PromptSpace.weights gives, per unit, its pieces' weights; plain numbers are accepted too
            weights=[[w] for w in weights.tolist()] if self.nested_weights else weights.tolist(),
            prompt=emphasis(self.units, weights[:n]),
            negative_prompt=emphasis(self.negative_units, weights[n:]),
            seeds=list(self.seeds),
            fitness=[],
            loss=0.0,
        )
        if failed:
            record.status = "failed"
            record.error = f"RuntimeError: backend exploded on {HOSTILE}"
            record.loss = 1e6
            record.fitness = [1e6] + ([float(np.linalg.norm(evaluated))] if self.multi else [])
        else:
            record.images = self.store.save_batch_images(generation, index, self._images(), self.seeds)
            evaluation = self._evaluation(scale=1.0 / (1 + generation))
            record.loss = evaluation.value
            record.components = dict(evaluation.components)
            record.objectives = {"flip": evaluation.to_json()}
            record.timings = {"generate": 0.01, "score": 0.002}
            record.fitness = [record.loss] + ([float(np.linalg.norm(evaluated))] if self.multi else [])
        self.store.write_individual(record)
        record.objectives = {}  # on disk; kept in memory they would blur the benchmark's memory figure
        self.records.append(record)
        self.evaluations += 1
        if record.status == "ok" and (self.best is None or record.fitness[0] < self.best.fitness[0]):
            self.best = record
        return record

    def baseline(self) -> IndividualRecord:
        record = self.individual(0, 0)
        self.info["targets"] = self.store.save_targets(self.store.load_batch_images(record)[: self.n_targets])
        self._write_info("running")
        return record

    def generation(
        self, generation: int, *, failed: Sequence[int] = (), stop_after: int | None = None
    ) -> list[IndividualRecord]:
        """Write one generation; with stop_after, only that many individuals and no generation.json
        (an interrupt in the middle of the generation)."""
        count = self.lambda_ if stop_after is None else stop_after
        records = [self.individual(generation, i, failed=i in failed) for i in range(count)]
        if stop_after is not None:
            return records
        population = np.array([r.x for r in records])
        assert self.best is not None
        # An invented CMA state that shrinks generation by generation, summarised by the run's own code.
        optimizer = SimpleNamespace(
            sigma=0.05 * 0.9**generation,
            axis_ratio=1.0 + 0.1 * generation,
            axis_scales=np.linspace(0.5, 1.5, self.dim) * 0.9**generation,
            centroid=population.mean(axis=0),
        )
        summary = summarize_generation(generation, list(population), records, best=self.best, optimizer=optimizer,
                                       lambda_=self.lambda_, seconds=0.1, run_info=self.info, guard_on=True)
        self.store.write_generation(summary)
        self.generation_records.append(summary)
        self.info["generations_done"] = generation
        self._write_info("running")
        return records

    def finish(self, status: str = "finished", error: str | None = None) -> None:
        self._write_info(status, error)

    def _write_info(self, status: str, error: str | None = None) -> None:
        self.info["status"] = status
        self.info["error"] = error
        self.info["updated"] = "2026-11-02 10:05:00"
        self.info["evaluations"] = self.evaluations
        self.info["best"] = self.store.summary_of(self.best)
        self.info["baseline"] = self.store.summary_of(self.records[0] if self.records else None)
        self.store.write_run(self.info)


def build_run(
    root: Path,
    *,
    generations: int = 3,
    failed: dict[int, Sequence[int]] | None = None,
    status: str = "finished",
    error: str | None = None,
    interrupted_after: int | None = None,
    **kwargs: Any,
) -> SyntheticRun:
    """A complete run directory: baseline, `generations` generations, status written at the end.
    interrupted_after=k leaves a last generation with k individuals and no generation.json."""
    run = SyntheticRun(root, generations=generations, **kwargs)
    run.baseline()
    failed = failed or {}
    for g in range(1, generations + 1):
        run.generation(g, failed=failed.get(g, ()))
    if interrupted_after is not None:
        run.generation(generations + 1, stop_after=interrupted_after)
    run.finish(status, error)
    return run
