"""Command line: `python -m lib_pinning demo | pin --server URL | resume DIR | report DIR`.

Flags are generated from the options models (`PinningOptions`, `ToySettings`), so the CLI offers
exactly the options the WebUI shows, with the same names, ranges and help.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from lib_pinning import guard
from lib_pinning.analysis.sweep import DEFAULT_STEP as DEFAULT_SWEEP_STEP
from lib_pinning.generator import DemoPrompt, ToyGenerator, ToySettings
from lib_pinning.options import PinningOptions
from lib_pinning.options_model import OptionError, OptionsModel, OptionSpec
from lib_pinning.resume import RESUME_OPTIONS
from lib_pinning.run import PinningRun, RunEndedEarly, RunEvent, RunResult, derive_seeds
from lib_pinning.store import RunDirectoryError

log = logging.getLogger("lib_pinning")

DEFAULT_RUNS_DIR = Path("outputs/prompt_pins")
# Exit status of an interrupted run (Ctrl-C, 128 + SIGINT: the shell's convention), so scripts can
# tell it from a finished one (0) and a failed one (1); 2 is bad input.
EXIT_INTERRUPTED = 130
# Options the toy model cannot serve, so the demo does not offer them: the aesthetic head reads
# CLIP ViT-L/14 embeddings of real pictures, and the toy's images are scored by its own tiny CLIP.
TOY_UNSUPPORTED = ("aesthetic_weight", "aesthetic_spread_weight")
# Options of the WebUI script alone: the command line's pin takes its servers as --server.
WEBUI_ONLY = ("extra_servers",)


def _flag(spec: OptionSpec) -> str:
    return "--" + spec.key.replace("_", "-")


def _flags(spec: OptionSpec) -> list[str]:
    """The option's flag, then its aliases' (argparse lists them all in the help)."""
    return [_flag(spec)] + ["--" + alias.replace("_", "-") for alias in spec.cli_aliases]


def add_option_flags(
    parser: argparse.ArgumentParser, model: type[OptionsModel], title: str, keys: Sequence[str] | None = None
) -> None:
    """One flag per option (or per option in `keys`); values stay strings here and are coerced by
    the option's own spec."""
    group = parser.add_argument_group(title)
    for spec in model.specs():
        if keys is not None and spec.key not in keys:
            continue
        # argparse %-formats help texts: a literal % ("99% of its pixels") must be doubled.
        help_text = f"{spec.help} [{spec.range_text()}; default: {spec.default!r}]".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": spec.key, "default": argparse.SUPPRESS, "help": help_text}
        if spec.kind == "paths":
            kwargs.update(nargs="+", metavar="PATH")
        elif spec.kind == "choice":
            kwargs.update(choices=spec.choices)
        group.add_argument(*_flags(spec), **kwargs)


def options_from_args(model: type[OptionsModel], args: argparse.Namespace) -> Any:
    keys = {s.key for s in model.specs()}
    return model.from_values({k: v for k, v in vars(args).items() if k in keys})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lib_pinning",
        description="Pin a prompt: search per-unit attention weights with CMA-ES so its images vary less "
        "across seeds (or land on target images).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run a pinning on the embedded toy diffusion model")
    demo.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="where run directories go")
    add_option_flags(demo, DemoPrompt, "prompt and seeds")
    add_option_flags(demo, ToySettings, "sampling (toy model)")
    add_option_flags(demo, PinningOptions, "pinning", keys=[
        s.key for s in PinningOptions.specs() if s.key not in TOY_UNSUPPORTED + WEBUI_ONLY
    ])

    resume = commands.add_parser(
        "resume", help="continue an interrupted or stopped run (optionally with a larger budget)"
    )
    resume.add_argument("run_dir", type=Path)
    resume.add_argument(
        "--from-cluster", type=int, metavar="K", default=None,
        help="instead of continuing the run, start a new run (beside it) at the centre of cluster K of its "
        "weight map (weight_map.json, see the report's map), with a step size about the cluster's spread",
    )
    add_option_flags(resume, PinningOptions, "what a resumed run may change", keys=RESUME_OPTIONS)

    from lib_pinning.remote.cli import add_pin_command, add_resume_flags  # here: httpx loads only for the CLI

    add_resume_flags(resume)
    add_pin_command(commands)

    sweep = commands.add_parser(
        "sweep", help="measure each unit's influence one at a time around the run's best (extra batches, same seeds); "
        "a run made with `pin` is swept on servers given with --server"
    )
    sweep.add_argument("run_dir", type=Path)
    sweep.add_argument(
        "--budget", type=int, default=20,
        help="batches to spend at most: 2 per unit and seed set; above 2 per unit, extra seed sets after the "
        "run's narrow the intervals [default: 20]",
    )
    sweep.add_argument("--step", type=float, default=DEFAULT_SWEEP_STEP,
                       help=f"the weight change up and down [default: {DEFAULT_SWEEP_STEP:g}]")
    add_resume_flags(sweep)

    report = commands.add_parser("report", help="rebuild a run's plots, GIFs and index.html from its files")
    report.add_argument("run_dir", type=Path)
    return parser


class _Progress:
    """A tqdm bar over the run's evaluations."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, event: RunEvent) -> None:
        if self.bar is None:
            self.bar = tqdm(total=event.total, initial=event.done, unit="batch", dynamic_ncols=True)
        self.bar.n = event.done
        postfix = {"gen": event.generation}
        if event.best_fitness is not None:
            postfix["best"] = f"{event.best_fitness:.5f}"
        if event.kind == "sweep":
            postfix["sweep"] = f"{event.sweep_done}/{event.sweep_total}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()
        if event.kind == "end":
            self.bar.close()


def _reporter() -> Any:
    from lib_pinning.report import Reporter

    return Reporter()


def _print_result(result: RunResult) -> None:
    out = sys.stdout
    out.write(f"\nstatus:        {result.status}" + (f" ({result.error})" if result.error else "") + "\n")
    repeats = f" + {result.repeats} repeats (reused, not generated)" if result.repeats else ""
    out.write(f"evaluations:   {result.batches} batches{repeats}, {result.generations_done} generations\n")
    out.write(f"stopped:       {result.stop_reason}\n")
    out.write(f"baseline loss: {result.baseline.loss:.5f}\n")
    out.write(f"best loss:     {result.best.loss:.5f} (generation {result.best.generation}, #{result.best.index})\n")
    prompt, negative = result.shown(result.best)
    out.write(f"best prompt:   {prompt}\n")
    if negative:
        out.write(f"best negative: {negative}\n")
    if result.degenerate_generations:
        listed = ", ".join(str(g) for g in result.degenerate_generations)
        out.write(f"degenerate:    most images of generation(s) {listed} were broken (black, flat or fried)\n")
    if result.best.degenerate:
        counts = guard.describe(guard.summarize_reasons(result.best.degenerate_reasons), len(result.best.degenerate_reasons))
        out.write(f"warning:       the best batch has degenerate images ({counts})\n")
    if result.sweep is not None and result.sweep.status != "done":
        out.write(f"sweep:         {result.sweep.message}\n")
    # Before the paths: scripts (and users) read the report's path from the last line.
    for line in _influence_lines(result.run_dir):
        out.write(line + "\n")
    out.write(f"run directory: {result.run_dir}\n")
    out.write(f"report:        {result.report_path}\n")


def _influence_lines(run_dir: Path) -> list[str]:
    """The three tightest and loosest units (measured by the sensitivity sweep when the run has one),
    from the influence.json the final report wrote (or computed here when the report did not write one)."""
    from lib_pinning.analysis import influence
    from lib_pinning.sweep_stage import summary_lines
    from lib_pinning.store import RunStore, read_json

    path = run_dir / influence.INFLUENCE_FILE
    try:
        data = read_json(path) if path.is_file() else influence.analyse_store(RunStore.open(run_dir))
    except (OSError, RunDirectoryError, ValueError) as e:
        log.warning("no influence summary: %s", e)
        return []
    return summary_lines(data) if isinstance(data, dict) else []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The toy model's tensors are small: extra intra-op threads only synchronise, and on a busy
    # 2-core machine two threads made the demo 16x slower (docs/benchmarks.md).
    torch.set_num_threads(1)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    run: PinningRun | None = None
    try:
        # Before the run exists: importing matplotlib takes a second, in which Ctrl-C must not
        # find a run folder without its handler.
        reporter = _reporter() if args.command != "report" else None
        if args.command == "demo":
            demo_prompt = options_from_args(DemoPrompt, args)
            options = options_from_args(PinningOptions, args)
            generator = ToyGenerator(options_from_args(ToySettings, args))
            from lib_pinning.analysis import region

            start = region.region_of(options, [args.runs_dir])  # --from-run: the prompts and seeds are the old run's
            if start is not None:
                run = region.start_run(start, generator=generator, options=options, runs_dir=args.runs_dir)
            else:
                run = PinningRun.start(
                    generator=generator,
                    prompt=demo_prompt.prompt,
                    negative_prompt=demo_prompt.negative_prompt,
                    seeds=derive_seeds(demo_prompt.seed, demo_prompt.batch_size),
                    options=options,
                    runs_dir=args.runs_dir,
                )
        elif args.command == "pin":
            from lib_pinning.remote.cli import start_pin

            run = start_pin(args)
            if run is None:  # --dry-run: checked and printed, nothing to run
                return 0
        elif args.command == "resume":
            changes = {
                s.key: s.coerce(getattr(args, s.key)) for s in PinningOptions.specs()
                if s.key in RESUME_OPTIONS and hasattr(args, s.key)
            }
            description = _generator_description(args.run_dir)
            if args.from_cluster is not None:
                if description.get("backend") == "remote":
                    raise ValueError("--from-cluster starts a toy-model run; for a run made with `pin`, use `pin` "
                                     "with the cluster's prompt (see the report's weight map)")
                run = _run_from_cluster(args.run_dir, args.from_cluster, changes)
            else:
                generator = rebuild_generator(description, args, "resume")
                run = PinningRun.resume(args.run_dir, generator, changes)
                if description.get("backend") == "remote":
                    # Where the run goes on (--server may have moved it), for its report and the next resume.
                    run.run_info["generator"] = generator.describe()
        elif args.command == "sweep":
            return _sweep_command(args)
        else:
            from lib_pinning.report import rebuild

            path = rebuild(args.run_dir)
            sys.stdout.write(f"report: {path}\n")
            return 0
        result = run.execute(on_event=_Progress(), reporter=reporter)
    except (OptionError, ValueError, FileNotFoundError, RunDirectoryError) as e:
        parser.exit(2, f"error: {e}\n")
    except RunEndedEarly as e:
        sys.stderr.write(f"{e}\n")
        return EXIT_INTERRUPTED if e.status == "interrupted" else 1
    except KeyboardInterrupt:
        # Outside the run's own handler (before it started, or after it ended).
        if run is not None and run.run_info.get("status") == "running":
            run.mark_interrupted()
        sys.stderr.write("interrupted" + (f"; run directory: {run.store.root}" if run is not None else "") + "\n")
        return EXIT_INTERRUPTED
    _print_result(result)
    if result.sweep is not None and result.sweep.status == "interrupted":
        return EXIT_INTERRUPTED  # the search finished, but Ctrl-C cut the sweep that was asked for
    return {"failed": 1, "interrupted": EXIT_INTERRUPTED}.get(result.status, 0)


def rebuild_generator(description: dict[str, Any], args: argparse.Namespace, command: str) -> Any:
    """The backend a run was made with, for `resume` and `sweep`: the toy model from its recorded
    settings, a `pin` run's servers (recorded or given with --server, checked: the run's
    checkpoint); a ValueError (exit 2) saying what to do for a backend the command line cannot rebuild."""
    backend = description.get("backend")
    if backend == "remote":
        from lib_pinning.remote.cli import resume_generator

        return resume_generator(description, args)
    if backend == "toy":
        if args.server or args.api_auth:
            raise ValueError("--server and --api-auth are for runs made with `pin`; this run used the toy model")
        return ToyGenerator.from_description(description)
    what = "the WebUI's own process" if backend == "webui" else "a backend the command line does not know"
    label = PinningOptions.spec("sweep_batches").label
    advice = (f"run the generation again in the WebUI with '{label}' (sweep_batches) above 0" if command == "sweep"
              else "the WebUI cannot continue a run: run the generation again there (a new run)")
    raise ValueError(f"`{command}` cannot rebuild this run's backend ({backend!r}: {what}): {advice}, or pin the "
                     f"prompt on a WebUI started with --api (`pin --server URL`), whose runs `{command} RUN_DIR "
                     "--server URL` can rebuild")


def _sweep_command(args: argparse.Namespace) -> int:
    """`sweep RUN_DIR`: the sweep around the run's best with the run's own backend."""
    from lib_pinning.analysis.sweep import sweep, sweep_lines
    from lib_pinning.store import RunStore

    store = RunStore.open(args.run_dir)  # a folder that is not a run is refused before any server is asked
    generator = rebuild_generator(_generator_description(args.run_dir), args, "sweep")
    try:
        data = sweep(store, generator, args.budget, args.step)
    finally:
        if hasattr(generator, "close"):
            generator.close()
    sys.stdout.write("".join(line + "\n" for line in sweep_lines(data["sweep"])))
    # Not rebuilt here: a rebuild redraws the weight map too (UMAP: tens of seconds).
    sys.stderr.write(f"written to {args.run_dir / 'influence.json'}; `python -m lib_pinning report "
                     f"{args.run_dir}` shows it in the report\n")
    return 0


def _generator_description(run_dir: Path) -> dict[str, Any]:
    from lib_pinning.store import RunStore

    return RunStore.open(run_dir).read_run(required=("generator",))["generator"]


def _run_from_cluster(run_dir: Path, cluster: int, changes: dict[str, Any]) -> PinningRun:
    """A new run beside `run_dir`, from the centre of its weight map's cluster (analysis/region.py),
    with the resume flags given (`changes`) applied to the old run's options."""
    from lib_pinning.analysis import region

    start = region.region_start(run_dir, cluster)
    return region.start_run(start, generator=ToyGenerator.from_description(start.generator),
                            options=start.options.replace(**changes), runs_dir=Path(run_dir).resolve().parent)
