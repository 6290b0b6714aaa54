"""The `pin` command: `python -m lib_pinning pin --server URL [--server URL ...] [options]`.

Same options model as `demo` (prompt and seeds, every pinning option), plus the generation settings
the servers get (`RemoteSettings`) and how to reach them. `--dry-run` checks the servers and prints
what would run, generating nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lib_pinning.analysis import region
from lib_pinning.cli import DEFAULT_RUNS_DIR, WEBUI_ONLY, add_option_flags, options_from_args
from lib_pinning.generator import DemoPrompt
from lib_pinning.objectives.compose import active_terms
from lib_pinning.optimizer import CmaSettings
from lib_pinning.options import PinningOptions
from lib_pinning.options_model import PinningInputError
from lib_pinning.prompt import PromptSpace
from lib_pinning.remote.client import ServerConfig
from lib_pinning.remote.payload import RemoteSettings, build_payload
from lib_pinning.remote.pool import RemoteGenerator
from lib_pinning.run import PinningRun, derive_seeds
from lib_pinning.stopping import planned_batches


def add_pin_command(commands: Any) -> None:
    """Add `pin` to the CLI's subcommands."""
    pin = commands.add_parser("pin", help="pin a prompt on one or more WebUI / Forge servers over their API (--api)")
    pin.add_argument("--server", action="append", required=True, metavar="URL",
                     help="a server's address, e.g. http://127.0.0.1:7860 (repeat for several; "
                     "http://user:password@host:port gives that server its own --api-auth)")
    pin.add_argument("--api-auth", metavar="USER:PASSWORD", help="the servers' --api-auth credentials")
    pin.add_argument("--insecure", action="store_true", help="do not verify the servers' TLS certificates")
    pin.add_argument("--timeout", type=float, default=600.0, help="seconds one batch may take [default: 600]")
    pin.add_argument("--connect-timeout", type=float, default=10.0, help="seconds to connect [default: 10]")
    pin.add_argument("--slots", type=int, default=1,
                     help="batches in flight per server [default: 1: a WebUI generates one at a time]")
    pin.add_argument("--retry-after", type=float, default=2.0,
                     help="seconds before a failed server is tried again (doubling on each failure) [default: 2]")
    pin.add_argument("--dry-run", action="store_true", help="check the servers and print what would run")
    pin.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help="where run directories go")
    add_option_flags(pin, DemoPrompt, "prompt and seeds")
    add_option_flags(pin, RemoteSettings, "generation settings (sent to every server)")
    add_option_flags(pin, PinningOptions, "pinning",
                     keys=[s.key for s in PinningOptions.specs() if s.key not in WEBUI_ONLY])


def add_resume_flags(resume: argparse.ArgumentParser) -> None:
    """`resume` of a remote run: the servers may have moved, and credentials are never recorded."""
    group = resume.add_argument_group("a run made with `pin` (remote servers)")
    group.add_argument("--server", action="append", metavar="URL",
                       help="the servers to go on with, replacing the run's recorded addresses (repeat for several)")
    group.add_argument("--api-auth", metavar="USER:PASSWORD", help="the servers' --api-auth credentials")
    group.add_argument("--insecure", action="store_true", default=None,
                       help="do not verify the servers' TLS certificates")


def server_address(url: str, shared: tuple[str, str] | None) -> tuple[str, tuple[str, str] | None]:
    """The address without credentials, and the credentials: its own (user:password@) or `shared`."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PinningInputError(f"--server {url!r} is not an http(s) address")
    auth = shared if parts.username is None else (parts.username, parts.password or "")
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), auth


def server_configs(args: argparse.Namespace) -> list[ServerConfig]:
    shared = _credentials(args.api_auth) if args.api_auth else None
    configs = []
    for url in args.server:
        address, auth = server_address(url, shared)
        configs.append(ServerConfig(
            url=address, auth=auth, verify=not args.insecure, timeout=args.timeout, connect_timeout=args.connect_timeout,
        ))
    return configs


def resume_generator(description: dict[str, Any], args: argparse.Namespace) -> RemoteGenerator:
    """The recorded pool of a `pin` run, checked (same checkpoint as the run's) before it resumes."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO
    shared = _credentials(args.api_auth) if args.api_auth else None
    addresses = [server_address(url, shared) for url in (args.server or description["servers"])]
    generator = RemoteGenerator.from_description(description, addresses, verify=False if args.insecure else None)
    generator.check()
    return generator


def start_pin(args: argparse.Namespace) -> PinningRun | None:
    """Check the servers, then start the run (None after --dry-run)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO
    demo_prompt = options_from_args(DemoPrompt, args)
    options = options_from_args(PinningOptions, args)
    settings = options_from_args(RemoteSettings, args)
    # --from-run: the prompts and seeds are the old run's; checked before the servers are asked.
    start = region.region_of(options, [args.runs_dir])
    generator = RemoteGenerator(server_configs(args), settings, slots=args.slots, retry_after=args.retry_after)
    servers = generator.check()
    if args.dry_run:
        if start is None:
            plan = _Plan(demo_prompt.prompt, demo_prompt.negative_prompt,
                         derive_seeds(demo_prompt.seed, demo_prompt.batch_size), options)
        else:  # what region.start_run would start: the old run's prompts at the centre, its seeds
            plan = _Plan(start.prompt, start.negative_prompt, tuple(start.seeds), start.applied_to(options),
                         f"cluster {start.cluster_id} of {start.run_dir} (initial std {start.initial_std:g})")
        _print_plan(generator, servers, plan)
        generator.close()
        return None
    if start is not None:
        return region.start_run(start, generator=generator, options=options, runs_dir=args.runs_dir)
    return PinningRun.start(
        generator=generator, prompt=demo_prompt.prompt, negative_prompt=demo_prompt.negative_prompt,
        seeds=derive_seeds(demo_prompt.seed, demo_prompt.batch_size), options=options, runs_dir=args.runs_dir,
    )


@dataclass(frozen=True)
class _Plan:
    """What a run would start from: its prompts, seeds and options, and the region it starts in."""

    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]
    options: PinningOptions
    region: str | None = None


def _print_plan(generator: RemoteGenerator, servers: dict[str, Any], plan: _Plan) -> None:
    options, seeds = plan.options, plan.seeds
    space = PromptSpace(plan.prompt, plan.negative_prompt, options.granularity)
    cma = CmaSettings.resolve(options, space.dim, len(active_terms(options)),
                              blocks=(space.positive.unit_count, space.negative.unit_count))
    payload = build_payload(generator.settings, plan.prompt, plan.negative_prompt, seeds[0], len(seeds),
                            init_image="<init image>" if generator.settings.mode == "img2img" else None)
    out = sys.stdout
    out.write("servers (all checked):\n")
    for name, found in servers.items():
        out.write(f"  {name}: {found['checkpoint']}\n")
    if plan.region is not None:
        out.write(f"start:         {plan.region}\n")
    out.write(f"prompt:        {plan.prompt}\n")
    if plan.negative_prompt:
        out.write(f"negative:      {plan.negative_prompt}\n")
    out.write(f"weights:       {space.dim} ({options.granularity} units)\n")
    out.write(f"search:        {cma.generations} generations of {cma.lambda_}, at most "
              f"{planned_batches(options, cma.generations, cma.lambda_)} batches of {len(seeds)} images\n")
    if options.sweep_batches:
        out.write(f"sweep:         then {options.sweep_batches} batches of sensitivity sweep around the best\n")
    out.write(f"seeds:         {', '.join(str(s) for s in seeds)}\n")
    out.write(f"first request: POST /sdapi/v1/{generator.settings.mode} {json.dumps(payload)}\n")


def _credentials(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep:
        raise PinningInputError("--api-auth must be USER:PASSWORD")
    return user, password
