"""Real-WebUI integration harness: a WebUI tree, its venv, a tiny checkpoint, this extension, a server.

Why: the glue in lib_pinning/webui/ and pinning_samplers/ is unit-tested against tests/webui_stub/, a
stand-in that can drift from the real WebUIs. These tests start the real ones (from the source
trees in ../shared/webui/, or a user's checkout) on a CPU with tiny random checkpoints.

The interface other target modules code against (stable; add fields with defaults only):

    WebUI(name, tarball, env_var, venv_recipe, ...)
        One WebUI source tree and how to build its venv. `tarball` is a file name in the tarball
        folder (PINNING_WEBUI_TARBALLS, default <repo>/../shared/webui); `env_var` names an
        environment variable holding a checkout to use instead (e.g. PINNING_WEBUI_A1111), used
        in place and never written to (all user data goes to a per-session --data-dir).
        `venv_recipe(ctx: VenvContext) -> None` installs everything into the fresh venv
        `ctx.venv` (use `ctx.pip(...)`, `ctx.python`, `ctx.tree`, `ctx.work`); the venv is built
        once per machine under cache_root()/webui/<name>-<key>/ (PINNING_CACHE
        overrides the root), keyed by the tarball's sha256 (or the checkout's path and
        requirements), the recipe's source code, `recipe_inputs` (extra strings) and the harness
        version; a lock file serialises builds across processes. `prepare()` -> PreparedWebUI
        (tree, python).
        `start_env(prepared) -> dict` adds environment variables for every start (and the
        extension's install.py run).

    Target(name, webui, checkpoint, launch_args, ...)
        One server configuration the checks run against, e.g. "a1111-sd1", "forge-sd15".
        `checkpoint(prepared: PreparedWebUI, cache: Path) -> Checkpoint` builds (or reuses, keyed
        by its parameters under `cache`) the tiny model and says which files to pass;
        `launch_args(ctx: LaunchContext) -> list[str]` the arguments after launch.py (the harness
        adds none but the port: include --api, --server-name 127.0.0.1, --port ctx.port,
        --data-dir ctx.data_dir, --ckpt ctx.checkpoint.path ...); `extra_extensions(ctx)` test-only
        extension folders to add (e.g. a preload registering a tiny open_clip architecture);
        `request_defaults` merged into every generation request (e.g. SDXL's
        {"override_settings": {"live_previews_enable": False}}); `features` a set of quirk
        names the checks consult ("a1111", "forge", "sd1", "sdxl", "schedule_type", "gradio3",
        "gradio4"); `startup_timeout` in seconds; `env` extra environment variables;
        `settings` the data dir's initial config.json; `data_files(ctx)` {relative path: file}
        copied into the data dir; `reload_ui(server)` presses Reload UI (default
        `reload_ui`, through gradio's /run/predict).
        Register it with `register(target)` from a module tests/integration/target_<name>.py;
        conftest.py imports every such module, and the checks are parametrized over
        `registered()` (PINNING_TARGETS="a1111-sd1,forge-sd15" selects some).

    Server (what a check's `webui_server` fixture is): `.url`, `.get(path)`, `.post(path, json)` ->
        Response(status, json, text), `.txt2img(**fields)` with the target's request_defaults,
        `.log_text()`, `.log_path`, `.data_dir`, `.target`; `.restart_scripts()` reloads the
        WebUI's scripts (Reload UI) and waits until it answers again.

Availability: a target whose tree is missing is skipped with one line naming what is missing;
with PINNING_REQUIRE_WEBUI=1 (CI) a missing tree or any skipped integration test is an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import inspect
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HARNESS_VERSION = "1"
"""Bump to rebuild every cached venv (part of each venv's key)."""

REPO = Path(__file__).resolve().parents[2]
CONSTRAINT_TORCH = "torch==2.13.0+cpu"
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "DO_NOT_TRACK": "1",
    "PYTHONUNBUFFERED": "1",
}


class Unavailable(Exception):
    """The target cannot run here (no tree); the message says what is missing, in one line."""


def cache_root() -> Path:
    """PINNING_CACHE, else the user's cache folder, unless a folder on that path starts with ".":
    gradio 3.41 refuses to serve any `file=` path with such a part (routes.py `is_dotfile`), and
    the A1111 page would load none of its JavaScript from a tree under ~/.cache."""
    if os.environ.get("PINNING_CACHE"):
        return Path(os.environ["PINNING_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "sd-prompt-pinning"
    if any(part.startswith(".") for part in base.parts):
        base = Path("/var/tmp/sd-prompt-pinning")
    return base


def tarball_dir() -> Path:
    return Path(os.environ.get("PINNING_WEBUI_TARBALLS") or REPO.parent / "shared" / "webui")


def require_webui() -> bool:
    return os.environ.get("PINNING_REQUIRE_WEBUI", "") not in ("", "0")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (two pytest workers must not build one venv at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def timed(label: str, timings: dict[str, float] | None = None) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def timer() -> Iterator[None]:
        start = time.monotonic()
        yield
        seconds = time.monotonic() - start
        if timings is not None:
            timings[label] = seconds
        log.info("%s: %.1f s", label, seconds)
    return timer()


# venv --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VenvContext:
    """What a venv recipe gets: the tree it installs for, the fresh venv and a scratch folder."""

    tree: Path
    venv: Path
    work: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *args: str | Path, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        command = [str(a) for a in args]
        log.info("venv: %s", " ".join(command))
        full_env = {**os.environ, **OFFLINE_ENV, **(env or {})}
        result = subprocess.run(command, cwd=cwd or self.work, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        (self.work / "recipe.log").open("a").write(f"$ {' '.join(command)}\n{result.stdout}\n")
        if result.returncode:
            tail = "\n".join(result.stdout.splitlines()[-40:])
            raise RuntimeError(f"venv recipe step failed ({result.returncode}): {' '.join(command)}\n{tail}")

    def pip(self, *args: str | Path, env: Mapping[str, str] | None = None) -> None:
        self.run(self.python, "-m", "pip", "--disable-pip-version-check", *args, env=env)

    def constraints(self, name: str, lines: list[str]) -> Path:
        path = self.work / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def requirements_without(self, name: str, drop: Callable[[str], bool]) -> Path:
        """A copy of the tree's requirements file `name` without the lines `drop` selects."""
        kept = [line for line in (self.tree / name).read_text().splitlines() if not drop(line)]
        path = self.work / name
        path.write_text("\n".join(kept) + "\n")
        return path


def patch_torchvision_meta_registrations(python: Path) -> None:
    """The registry's torchvision 0.28 is a CUDA build: beside the CPU torch, `import torchvision`
    dies in _meta_registrations.py registering fake kernels for ops its missing C++ library should
    have defined. Make the two nms registrations conditional on the ops being there."""
    found = subprocess.run([str(python), "-c", "import importlib.util as u; "
                            "print(u.find_spec('torchvision').submodule_search_locations[0])"],
                           stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    path = Path(found) / "_meta_registrations.py"
    text = path.read_text()
    patched = text
    for op in ("nms", "qnms"):
        decorator = f'@torch.library.register_fake("torchvision::{op}")'
        guarded = (f'@(torch.library.register_fake("torchvision::{op}") '
                   f'if torchvision.extension._has_ops() else (lambda f: f))')
        patched = patched.replace(decorator, guarded)
    if patched == text and "_has_ops() else (lambda f: f)" not in text:
        raise RuntimeError(f"{path}: the torchvision nms registrations were not found; the workaround needs updating")
    path.write_text(patched)
    subprocess.run([str(python), "-c", "import torchvision, torchvision.transforms"], check=True)


_TORCHVISION_FIX_SOURCE = inspect.getsource(patch_torchvision_meta_registrations)


@dataclasses.dataclass(frozen=True)
class PreparedWebUI:
    """A WebUI tree with its venv built; what checkpoint builders and servers use."""

    webui: WebUI
    tree: Path
    venv: Path
    timings: dict[str, float]

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


@dataclasses.dataclass(frozen=True)
class WebUI:
    name: str
    tarball: str
    env_var: str
    venv_recipe: Callable[[VenvContext], None]
    requirements: str = "requirements_versions.txt"
    recipe_inputs: tuple[str, ...] = ()
    start_env: Callable[[PreparedWebUI], dict[str, str]] = lambda prepared: {}

    def source(self) -> tuple[str, Path]:
        """('tarball', file) or ('checkout', folder); Unavailable when neither is there."""
        checkout = os.environ.get(self.env_var)
        if checkout:
            path = Path(checkout).expanduser().resolve()
            if not (path / "launch.py").is_file():
                raise Unavailable(f"{self.env_var}={checkout} is not a WebUI checkout (no launch.py)")
            return "checkout", path
        tarball = tarball_dir() / self.tarball
        if not tarball.is_file():
            raise Unavailable(f"no WebUI tree for {self.name}: neither {tarball} nor ${self.env_var}")
        return "tarball", tarball

    def __post_init__(self) -> None:
        # Read once, when the target module is imported: inspect.getsource reads the file again on
        # every call, and a file edited while pytest runs would give another key mid-session.
        object.__setattr__(self, "_recipe_source", inspect.getsource(self.venv_recipe))

    def key(self) -> str:
        kind, path = self.source()
        origin = sha256_file(path) if kind == "tarball" else f"{path}\n" + self._tree_requirements(path)
        return digest(HARNESS_VERSION, self.name, origin, getattr(self, "_recipe_source"), *self.recipe_inputs,
                      _TORCHVISION_FIX_SOURCE)

    def _tree_requirements(self, tree: Path) -> str:
        req = tree / self.requirements
        return req.read_text() if req.is_file() else ""

    def prepare(self) -> PreparedWebUI:
        """Unpack the tree (tarballs) and build the venv once per machine; reuse them after."""
        started = time.monotonic()
        kind, source = self.source()
        key = self.key()
        home = cache_root() / "webui" / f"{self.name}-{key}"
        timings: dict[str, float] = {}
        with file_lock(cache_root() / "webui" / f"{self.name}-{key}.lock"):
            ready = home / ".ready"
            tree = home / "tree" if kind == "tarball" else source
            if not ready.is_file():
                if home.exists():
                    shutil.rmtree(home)
                home.mkdir(parents=True)
                if kind == "tarball":
                    with timed(f"{self.name}: unpack", timings):
                        tree = unpack(source, home / "tree")
                venv = home / "venv"
                work = home / "work"
                work.mkdir()
                with timed(f"{self.name}: venv build", timings):
                    subprocess.run([_python311(), "-m", "venv", str(venv)], check=True)
                    ctx = VenvContext(tree=tree, venv=venv, work=work)
                    self.venv_recipe(ctx)
                    patch_torchvision_meta_registrations(ctx.python)
                ready.write_text(json.dumps({"source": str(source), "timings": timings}, indent=1))
            else:
                built = json.loads(ready.read_text()).get("timings", {})
                timings = {f"{label} (cached, when built)": seconds for label, seconds in built.items()}
        timings[f"{self.name}: prepare"] = time.monotonic() - started
        return PreparedWebUI(webui=self, tree=tree, venv=home / "venv", timings=timings)


def _python311() -> str:
    """The WebUIs want Python 3.10/3.11; their pinned wheels exist for 3.11."""
    found = shutil.which("python3.11") or (sys.executable if sys.version_info[:2] == (3, 11) else None)
    if not found:
        raise Unavailable("python3.11 is not on PATH (the WebUIs' pinned packages need it)")
    return found


def unpack(tarball: Path, dest: Path) -> Path:
    """Unpack a tarball holding one top-level folder; return that folder's final path (dest)."""
    staging = dest.parent / (dest.name + ".unpacking")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(staging, filter="data")
    tops = [p for p in staging.iterdir()]
    if len(tops) != 1 or not tops[0].is_dir():
        raise RuntimeError(f"{tarball}: expected one top-level folder, found {[p.name for p in tops]}")
    tops[0].rename(dest)
    staging.rmdir()
    return dest


# checkpoints --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A tiny model: the .safetensors to pass with --ckpt, plus what else the target needs."""

    path: Path
    build_seconds: float | None = None
    """None when it came from the cache."""


def cached_build(kind: str, params: Mapping[str, Any], build: Callable[[Path], Path],
                 *sources: Path) -> Checkpoint:
    """Build a checkpoint into a cache folder keyed by `params` and the builder's source files;
    `build(folder) -> .safetensors path`. Reused when its .ready marker exists."""
    key = digest(json.dumps(params, sort_keys=True), *(p.read_bytes() for p in sources))
    folder = cache_root() / "checkpoints" / f"{kind}-{key}"
    with file_lock(cache_root() / "checkpoints" / f"{kind}-{key}.lock"):
        ready = folder / ".ready"
        if ready.is_file():
            record = json.loads(ready.read_text())
            # A build records absolute paths (its yaml names its text encoder folder): a cache that
            # was moved or copied is rebuilt rather than pointing at the old place.
            if record.get("folder") == str(folder) and Path(record["path"]).is_file():
                return Checkpoint(path=Path(record["path"]))
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        start = time.monotonic()
        path = build(folder)
        seconds = time.monotonic() - start
        ready.write_text(json.dumps({"path": str(path), "folder": str(folder), "seconds": seconds}))
        return Checkpoint(path=path, build_seconds=seconds)


# servers ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LaunchContext:
    prepared: PreparedWebUI
    checkpoint: Checkpoint
    port: int
    data_dir: Path
    session_dir: Path


def reload_ui(server: Server) -> None:
    """Press Settings -> "Reload UI" (modules/ui_settings.py: the button settings_restart_gradio
    calls shared.state.request_restart; webui.py's main loop then unloads the scripts, re-imports
    them and builds a new UI and app on the same port). Done through gradio's /run/predict with
    that button's event, found in /config: gradio 3.41 (A1111) numbers events by position, gradio
    4.40 (Forge) by their `id` (equal to the position there, but not promised); targets are ids
    (3.x) or [id, event] pairs (4.x)."""
    config = server.get("/config").ok().json
    ids = [c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "settings_restart_gradio"]
    assert ids, "no Reload UI button (elem_id settings_restart_gradio) in the WebUI's /config"
    for index, dependency in enumerate(config["dependencies"]):
        targets = [t[0] if isinstance(t, list) else t for t in dependency.get("targets", [])]
        if ids[0] in targets:
            server.post("/run/predict", {"fn_index": dependency.get("id", index), "data": [],
                                         "session_hash": "pinning-tests"}).ok()
            return
    raise AssertionError("the Reload UI button has no event in /config")


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    webui: WebUI
    checkpoint: Callable[[PreparedWebUI, Path], Checkpoint]
    launch_args: Callable[[LaunchContext], list[str]]
    extra_extensions: Callable[[LaunchContext], Mapping[str, Mapping[str, str]]] = lambda ctx: {}
    """{folder name: {file name: text}} written into the data dir's extensions/ beside this one."""
    request_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    features: frozenset[str] = frozenset()
    startup_timeout: float = 300.0
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Written to the data dir's config.json before the first start (the WebUI's settings)."""
    data_files: Callable[[LaunchContext], Mapping[str, Path]] = lambda ctx: {}
    """{path relative to the data dir: file to copy there} before the first start."""
    reload_ui: Callable[[Server], None] = reload_ui
    """Asks the running WebUI to reload its scripts (Reload UI); Server.restart_scripts waits."""


_TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    if target.name in _TARGETS and _TARGETS[target.name] is not target:
        raise ValueError(f"target {target.name!r} registered twice")
    _TARGETS[target.name] = target
    return target


def registered() -> list[Target]:
    chosen = [n.strip() for n in os.environ.get("PINNING_TARGETS", "").split(",") if n.strip()]
    unknown = set(chosen) - set(_TARGETS)
    if unknown:
        raise ValueError(f"PINNING_TARGETS names unknown targets {sorted(unknown)}; known: {sorted(_TARGETS)}")
    return [_TARGETS[n] for n in (chosen or sorted(_TARGETS))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Response:
    status: int
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    def ok(self) -> Response:
        """Self when 2xx, else an AssertionError with the body (what a failing check shows)."""
        assert 200 <= self.status < 300, f"HTTP {self.status}: {self.text[:2000]}"
        return self


def copy_extension(dest: Path) -> None:
    """This repository as a user's clone would have it: the tracked (and not ignored) files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            stdout=subprocess.PIPE, check=True).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        relative = raw.decode()
        source = REPO / relative
        if relative.startswith("tests/") or not source.is_file():
            continue
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


class Server:
    """One WebUI process: started in its own process group, stopped by killing that group."""

    def __init__(self, target: Target, prepared: PreparedWebUI, checkpoint: Checkpoint, session_dir: Path) -> None:
        self.target = target
        self.prepared = prepared
        self.checkpoint = checkpoint
        self.session_dir = session_dir
        self.data_dir = session_dir / "data"
        self.log_path = session_dir / "webui.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.timings: dict[str, float] = {}
        self.starts = 0

    # set-up -------------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE"))}
        env.update(OFFLINE_ENV)
        env.update(self.prepared.webui.start_env(self.prepared))
        env.update(self.target.env)
        env["PATH"] = f"{self.prepared.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.prepared.venv)
        return env

    def launch_context(self) -> LaunchContext:
        return LaunchContext(prepared=self.prepared, checkpoint=self.checkpoint, port=self.port,
                             data_dir=self.data_dir, session_dir=self.session_dir)

    def install_extensions(self) -> None:
        """Copy this extension into extensions/ and run its install.py as the WebUI's launcher does
        (modules/launch_utils.py run_extension_installer: cwd the WebUI root, the root on PYTHONPATH)."""
        extensions = self.data_dir / "extensions"
        ours = extensions / "sd-prompt-pinning"
        copy_extension(ours)
        for folder, files in self.target.extra_extensions(self.launch_context()).items():
            for name, text in files.items():
                path = extensions / folder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        env = self.env()
        env["PYTHONPATH"] = f"{self.prepared.tree}{os.pathsep}{env.get('PYTHONPATH', '')}"
        with timed(f"{self.target.name}: install.py", self.timings):
            result = subprocess.run([str(self.prepared.python), str(ours / "install.py")], cwd=self.prepared.tree,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        (self.session_dir / "install.log").write_text(result.stdout)
        if result.returncode:
            raise RuntimeError(f"install.py failed ({result.returncode}); see {self.session_dir / 'install.log'}")

    # process ------------------------------------------------------------------------------------

    def write_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ctx = self.launch_context()
        for relative, source in self.target.data_files(ctx).items():
            (self.data_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, self.data_dir / relative)
        if self.target.settings:
            (self.data_dir / "config.json").write_text(json.dumps(dict(self.target.settings), indent=1))

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = self.target.launch_args(self.launch_context())
        command = [str(self.prepared.python), "launch.py", *args]
        (self.session_dir / "command.txt").write_text(" ".join(command) + "\n")
        log_file = open(self.log_path, "ab")
        start = time.monotonic()
        self.process = subprocess.Popen(command, cwd=self.prepared.tree, env=self.env(), stdout=log_file,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log_file.close()
        self.wait_ready(self.target.startup_timeout, starts_before=0)
        self.timings[f"{self.target.name}: server start"] = time.monotonic() - start

    def startups(self) -> int:
        """How many times the WebUI has finished starting (its 'Startup time:' line)."""
        return self.log_text().count("Startup time:")

    def wait_ready(self, timeout: float, starts_before: int) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"the WebUI exited with {self.process and self.process.returncode} while "
                                   f"starting; log: {self.log_path}\n{self.log_tail()}")
            if self.startups() > starts_before:
                with contextlib.suppress(OSError):
                    if self.get("/sdapi/v1/samplers", timeout=10).status == 200:
                        return
            time.sleep(0.5)
        raise TimeoutError(f"the WebUI did not answer within {timeout:.0f} s; log: {self.log_path}\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL what is left after 15 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)

    def restart_scripts(self, timeout: float | None = None) -> None:
        """Reload UI (the target's `reload_ui`) and wait until the WebUI has started again."""
        before = self.startups()
        self.target.reload_ui(self)
        self.wait_ready(timeout or self.target.startup_timeout, starts_before=before)

    # HTTP ---------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, timeout: float = 600) -> Response:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:
                return Response(answer.status, answer.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as e:
            return Response(e.code, e.read().decode("utf-8", "replace"))

    def get(self, path: str, timeout: float = 600) -> Response:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body: Any = None, timeout: float = 600) -> Response:
        return self.request("POST", path, {} if body is None else body, timeout=timeout)

    def generation(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """A request body: the target's request_defaults, then `fields` (override_settings merged)."""
        body = {**self.target.request_defaults, **fields}
        overrides = {**self.target.request_defaults.get("override_settings", {}), **fields.get("override_settings", {})}
        if overrides:
            body["override_settings"] = overrides
        return body

    def txt2img(self, **fields: Any) -> Response:
        return self.post("/sdapi/v1/txt2img", self.generation(fields))

    def img2img(self, **fields: Any) -> Response:
        return self.post("/sdapi/v1/img2img", self.generation(fields))

    # log ----------------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def start_server(target: Target, session_dir: Path) -> Server:
    """Prepare the target's WebUI and checkpoint, install the extension and start the server."""
    prepared = target.webui.prepare()
    ckpt_start = time.monotonic()
    checkpoint = target.checkpoint(prepared, cache_root() / "checkpoints")
    ckpt_seconds = time.monotonic() - ckpt_start
    server = Server(target, prepared, checkpoint, session_dir)
    server.timings.update(prepared.timings)
    built = "built" if checkpoint.build_seconds is not None else "cached"
    server.timings[f"{target.name}: checkpoint ({built})"] = ckpt_seconds
    session_dir.mkdir(parents=True, exist_ok=True)
    server.write_data_dir()
    server.install_extensions()
    try:
        server.start()
    except BaseException:
        server.stop()  # a start that timed out leaves its process group running otherwise
        raise
    return server
