"""What the "Prompt pinning" script does: build its UI, run a pinning from `run(p, *args)`, and
register its settings and API routes. scripts/prompt_pinning.py forwards its Script methods here.

The WebUI's modules are imported inside the functions (this package must import without the
WebUI); at run time they are already loaded, so the imports cost nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lib_pinning.analysis import region
from lib_pinning.options import PinningOptions
from lib_pinning.options_model import OptionError, PinningInputError
from lib_pinning.run import PinningRun, RunResult, derive_seeds
from lib_pinning.webui import TITLE, api, servers, settings, ui
from lib_pinning.webui.generator import WebUIGenerator, jobs_per_individual, model_tokenizer, steps_per_individual
from lib_pinning.webui.progress import WebUIProgress
from lib_pinning.webui.result import REPORT_PREFIX, build_processed, empty_processed, write_params_txt

log = logging.getLogger(__name__)


# ui ---------------------------------------------------------------------------------------------


def build_ui(script: Any, gr: Any, opts: Any) -> list[Any]:
    """The script's components (see `ui`); sets the script's infotext fields.

    No `paste_field_names`: the "send to" buttons copy fields between tabs by infotext key
    (modules/infotext_utils.py:L168-L175 in v1.10.1), and these fields are keyed by functions
    (`ui.paste_function`), which restore defaults for keys a pinning infotext leaves out.
    """
    defaults = {"flip_loss": settings.setting(opts, "prompt_pinning_default_objective")}
    components = ui.build(gr, script.elem_id, defaults, prompt_boxes=getattr(script, "prompt_boxes", ()))
    script.infotext_fields = ui.infotext_fields(components)
    return components


# arguments ----------------------------------------------------------------------------------------


def parse_args(args: Sequence[Any]) -> PinningOptions:
    """The script's arguments -> options.

    Two forms: the components' values in `PinningOptions.specs()` order (the UI, and an API call
    with all of them), or one object {option key: value} as the first argument (an API call naming
    only what it changes; the rest of the slice the WebUI passes belongs to other scripts when the
    request's script_args were shorter, modules/api/api.py:L344, and is ignored).
    """
    specs = PinningOptions.specs()
    try:
        if args and isinstance(args[0], Mapping):
            return PinningOptions.from_values(dict(args[0]))
        if len(args) < len(specs):
            raise PinningInputError(
                f"{TITLE}: expected {len(specs)} script arguments (the options in this order: "
                f"{', '.join(s.key for s in specs)}), got {len(args)}; or pass one object "
                f"{{\"option\": value}} naming only the options to change"
            )
        return PinningOptions.from_positional(list(args[:len(specs)]))
    except OptionError as e:
        raise PinningInputError(f"{TITLE}: {e}") from e
    except PinningInputError:
        raise
    except (TypeError, ValueError) as e:
        raise PinningInputError(f"{TITLE}: {e}") from e


# run ---------------------------------------------------------------------------------------------------


def run(p: Any, args: Sequence[Any]) -> Any:
    """Pin p's prompt; return the Processed of the best and the baseline batch.

    Bad input is a PinningInputError (its message names the option), raised before anything is
    generated. Under the API (`p.is_api`, set by modules/api/api.py's txt2img/img2img handlers)
    it becomes an HTTP 422 error instead: the WebUI's API middleware (api_middleware's
    handle_exception, v1.10.1 and Forge alike) answers any other exception with status 500, an
    empty `detail` and a traceback in the console, which clients read as a server fault.
    """
    try:
        options = parse_args(args)
        with console_logging(options.cli_log):
            return _run(p, options)
    except PinningInputError as e:
        if getattr(p, "is_api", False):
            raise api_input_error(e) from e
        raise


def api_input_error(error: PinningInputError) -> Exception:
    """The HTTP 422 answer for `error`: a fastapi HTTPException (the middleware takes its
    status_code and detail and prints no traceback for it), named PinningInputError in the
    answer's `error` field."""
    return _api_input_error_class()(status_code=422, detail=str(error))


@functools.cache
def _api_input_error_class() -> type[Exception]:
    from fastapi import HTTPException  # the WebUI's; imported here so this module needs no fastapi

    return type("PinningInputError", (HTTPException,), {"__doc__": PinningInputError.__doc__,
                                                        "__module__": __name__})


def _run(p: Any, options: PinningOptions) -> Any:
    from modules import devices, paths, processing, sd_models, sd_samplers, shared

    if isinstance(p.prompt, list) or isinstance(p.negative_prompt, list):
        raise PinningInputError(f"{TITLE} pins one prompt; this generation has a list of prompts")
    if not options.models_dir:
        options = options.replace(models_dir=settings.models_dir(shared.opts, shared.cmd_opts, paths.models_path))
    processing.fix_seed(p)
    seeds = derive_seeds(int(p.seed), int(p.batch_size))
    runs_dir = settings.runs_dir(p, shared.opts)
    # Before any work: a run or cluster that does not exist is bad input (HTTP 422 under the API).
    # A run id is looked up in both tabs' runs folders (this tab's first): an img2img run may start
    # from a txt2img run's cluster.
    start = region.region_of(options, [runs_dir, *(folder for _, folder in settings.output_roots(shared.opts))])
    notes = []
    if start is not None:
        notes.append(f"Started from cluster {start.cluster_id} of run {start.run_dir.name}: its prompt rendered at the "
                     f"cluster's centre, its {len(start.seeds)} seeds, initial std {start.initial_std:g}.")
    if int(getattr(p, "n_iter", 1) or 1) > 1:
        notes.append(f"Batch count {p.n_iter} is not used: each individual is one batch of {p.batch_size} images.")

    generator = WebUIGenerator(
        p, processing=processing, shared=shared, sd_samplers=sd_samplers,
        keep_intermediate=bool(settings.setting(shared.opts, "prompt_pinning_keep_intermediate")),
        device=getattr(devices, "device", None),
    )
    if options.extra_servers:  # checked here, before the run folder exists
        generator = servers.pool_with_servers(
            generator, p, str(settings.setting(shared.opts, "prompt_pinning_servers")), shared=shared,
            sd_samplers=sd_samplers, sd_models=sd_models, sd_schedulers=_schedulers_module(),
        )
    try:
        return _pin(p, options, generator, seeds, notes, start, runs_dir)
    finally:
        if isinstance(generator, servers.WebUIPool):
            generator.close()


def _schedulers_module() -> Any:
    """modules.sd_schedulers (1.9+), or None before 1.9 (no schedule types)."""
    try:
        from modules import sd_schedulers
    except ImportError:
        return None
    return sd_schedulers


def _pin(p: Any, options: PinningOptions, generator: Any, seeds: tuple[int, ...], notes: list[str],
         start: region.RegionStart | None, runs_dir: Path) -> Any:
    from modules import paths, processing, shared

    tokenizer = model_tokenizer(shared.sd_model) if options.granularity == "token" else None
    tab = "img2img" if getattr(p, "init_images", None) is not None else "txt2img"
    try:
        if start is not None:
            pinning = region.start_run(start, generator=generator, options=options, runs_dir=runs_dir,
                                       tokenizer=tokenizer)
        else:
            pinning = PinningRun.start(
                generator=generator, prompt=p.prompt, negative_prompt=p.negative_prompt or "", seeds=seeds,
                options=options, runs_dir=runs_dir, tokenizer=tokenizer,
            )
    except (OptionError, ValueError, FileNotFoundError) as e:
        raise PinningInputError(f"{TITLE}: {e}") from e
    options = pinning.options  # a region's start changed the initial std and the start point
    run_params = {"Pin run": pinning.store.run_id, **options.to_infotext()}
    generator.extra_generation_params = run_params
    progress = WebUIProgress(
        shared.state, shared.total_tqdm, lambda_=pinning.settings.lambda_, generations=pinning.settings.generations,
        steps_per_individual=steps_per_individual(p), jobs_per_individual=jobs_per_individual(p),
    )
    reporter = _reporter(notes)
    try:
        result = pinning.execute(cancel=progress.cancel, cut=progress.cut, on_event=progress.on_event,
                                 reporter=reporter)
    except RuntimeError:
        if not progress.cancel():
            raise
        return empty_processed(processing, p, [
            f"{TITLE} was stopped ({progress.stop_reason}) before the baseline batch was done: nothing to show.",
            f"Run folder: {pinning.store.root}",
        ])

    progress.cancel()  # names the flag when the generator, not the engine, noticed it (a batch cut short)
    lines = _summary_lines(pinning, result, progress.stop_reason, tab, shared)
    lines += list(generator.comments) + notes
    processed = build_processed(
        processing, p, result, infotexts_for=generator.infotexts_for, run_params=run_params, comments=lines,
        enable_pnginfo=bool(getattr(shared.opts, "enable_pnginfo", True)),
    )
    if processed.infotexts and not getattr(shared.cmd_opts, "no_prompt_history", False):
        write_params_txt(paths.data_path, processed.infotexts[0])
    return processed


@contextlib.contextmanager
def console_logging(enabled: bool) -> Iterator[None]:
    """Show the engine's INFO lines (per-generation statistics) in the WebUI's console.

    The WebUI configures logging only with --loglevel or SD_WEBUI_LOG_LEVEL
    (modules/logging_config.py:L28-L33 in v1.10.1). Without them the root logger is not left
    unconfigured, though: the WebUI's own `logging.warning(...)` calls (e.g. the sampler/scheduler
    autocorrection in modules/sd_samplers.py, on every API generation) run `logging.basicConfig()`,
    which gives the root a handler and leaves its level at WARNING, so INFO lines are dropped.
    What counts is therefore whether an INFO record of "lib_pinning" would reach a handler. If it
    would not, the "lib_pinning" logger gets its own console handler at INFO while the run lasts,
    and stops propagating meanwhile (else its warnings would print twice). A logging setup that
    already shows INFO (--loglevel INFO) is left alone.
    """
    engine = logging.getLogger("lib_pinning")
    if not enabled or _info_reaches_a_handler(engine):
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[Prompt pinning] %(message)s"))
    level, propagate = engine.level, engine.propagate
    engine.addHandler(handler)
    engine.setLevel(logging.INFO)
    engine.propagate = False
    try:
        yield
    finally:
        engine.removeHandler(handler)
        engine.setLevel(level)
        engine.propagate = propagate


def _info_reaches_a_handler(logger: logging.Logger) -> bool:
    """Whether an INFO record logged on `logger` is emitted by some handler (Logger.callHandlers'
    walk; Python's last-resort handler, used when there is none, shows warnings only)."""
    if not logger.isEnabledFor(logging.INFO):
        return False
    current: logging.Logger | None = logger
    while current is not None:
        if any(handler.level <= logging.INFO for handler in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent  # type: ignore[assignment]
    return False


def _reporter(notes: list[str]) -> Any:
    """The report writer, or None (with a note) when its dependencies are missing."""
    try:
        from lib_pinning.report import Reporter

        return Reporter()
    except Exception as e:  # an ImportError of matplotlib/jinja2, or a broken install
        log.warning("prompt pinning: the report is unavailable: %s", e)
        notes.append(f"No report: {e} (see the extension's install messages).")
        return None


def _summary_lines(pinning: PinningRun, result: RunResult, stop_reason: str | None, tab: str, shared: Any) -> list[str]:
    best, baseline = result.best, result.baseline
    batch = len(best.seeds)
    lines = [
        f"{TITLE} {result.status}: {result.generations_done}/{pinning.settings.generations} generations, "
        f"{result.evaluations} batches. Best fitness {best.fitness[0]:.6g} (generation {best.generation}, "
        f"#{best.index}); baseline {baseline.fitness[0]:.6g}.",
        f"Images 1-{batch}: the best batch (the pinned prompt); images {batch + 1}-{2 * batch}: the baseline "
        f"(the prompt as written).",
    ]
    if stop_reason and result.status == "interrupted":
        lines.append(f"Stopped by {stop_reason}: the best individual so far is shown; "
                     "the report covers the run up to there.")
    if result.error:
        lines.append(f"The run failed: {result.error}")
    failed = [r for r in pinning.store.iter_individuals() if r.status != "ok"]
    if failed:
        lines.append(f"{len(failed)} individual(s) failed and were scored as worst; first error: {failed[0].error}")
    if result.report_path.is_file():
        lines.append(REPORT_PREFIX + report_link(result.report_path, result.run_dir.name, tab, shared.cmd_opts))
    lines.append(f"Run folder: {result.run_dir}")
    return lines


def report_link(report: Path, run_id: str, tab: str, cmd_opts: Any) -> str:
    """A URL of the report the browser can open: gradio's file route when it serves the run folder,
    else this extension's files route when the API is on, else the plain path."""
    url = settings.file_url(report, settings.gradio_allowed_roots(cmd_opts, _gradio_version()))
    if url is None and api_enabled(cmd_opts):
        url = api.files_url(run_id, api.REPORT_FILE, tab)
    return url or str(report)


def _gradio_version() -> str:
    try:
        import gradio

        return str(gradio.__version__)
    except Exception:  # no gradio (--nowebui installs still have it; tests may not)
        return ""


def api_enabled(cmd_opts: Any) -> bool:
    return bool(getattr(cmd_opts, "api", False) or getattr(cmd_opts, "nowebui", False))


# callbacks ---------------------------------------------------------------------------------------------------


def register_callbacks() -> None:
    """Settings and API routes; called when the script file is executed (every load and Reload UI,
    after the WebUI cleared the previous load's callbacks, modules/scripts.py:L491 in v1.10.1)."""
    from modules import script_callbacks

    script_callbacks.on_ui_settings(_on_ui_settings)  # no name=: 1.6 takes the callback only
    script_callbacks.on_app_started(_on_app_started)


def _on_ui_settings() -> None:
    from modules import shared

    try:
        import gradio as gr
    except ImportError:  # the WebUI builds its settings page with gradio; only a test may lack it
        gr = None
    settings.register_settings(shared, gr)


def _on_app_started(demo: Any, app: Any) -> None:
    from modules import shared

    if app is None or not api_enabled(shared.cmd_opts):
        return
    credentials = api.parse_credentials(getattr(shared.cmd_opts, "api_auth", None))
    allowed = settings.gradio_allowed_roots(shared.cmd_opts, _gradio_version()) if demo is not None else []

    def link(report: Path) -> str | None:
        return settings.file_url(report, allowed) if allowed else None

    if api.mount(app, lambda: settings.output_roots(shared.opts), credentials=credentials, report_url=link):
        log.info("prompt pinning: API routes under %s", api.PREFIX)
