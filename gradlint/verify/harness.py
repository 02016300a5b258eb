"""The child process of `gradlint verify`: run a training script under the checks, write a JSON record.

    python -m gradlint.verify.harness --record R.json --steps 30 --device auto train.py -- ARGS...
    python -m gradlint.verify.harness --record R.json --module pkg.train -- ARGS...

It runs in the user's working directory. The script runs as `__main__` with `sys.argv` set to
`[script, *ARGS]` and its folder first on `sys.path`, as `python train.py ARGS` would; a module (`-m`)
as `python -m pkg.train ARGS` would run it (the working directory first on `sys.path`, relative imports
working). Nothing in it is edited: the checks hang on module and optimizer hooks and a few wrapped torch
functions (see `monitor`, `patches`). The run stops after N steps with `StopRun`, a BaseException that
user code's `except Exception` lets pass. The record lists the project files the run imported.

With `--sources FILE` (a JSON object: real path -> fixed text) this is the patched run: those files are
served to the imports (and to the script itself) instead of the ones on disk (see `imports`).

With `--trace-step K` this is a replay: the same script, seed and arguments again, with the op-level
tracer armed from the start of step K (the first non-finite one), to name the op, module and line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import runpy
import signal
import sys
import time
import traceback
import warnings
from typing import Optional

FORMAT = 2
EXIT_OK, EXIT_NO_TORCH = 0, 3


class Terminated(BaseException):
    """SIGTERM from the parent at --timeout: unwind the user's code so that the record still gets written."""


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m gradlint.verify.harness")
    p.add_argument("--record", required=True)
    p.add_argument("--progress")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int)
    p.add_argument("--trace-step", type=int)
    p.add_argument("--thresholds", default="{}", help="JSON object of Thresholds fields")
    p.add_argument("--sources", help="JSON file: real path -> fixed text, served in place of those files")
    p.add_argument("--module", action="store_true", help="SCRIPT is a module name, run as `python -m`")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    ns = p.parse_args(argv)
    if ns.args[:1] == ["--"]:
        ns.args = ns.args[1:]
    return ns


def _write(path: str, record: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, default=str)
    os.replace(tmp, path)


def _given(parser: argparse.ArgumentParser, dest: str) -> bool:
    flags = [s for a in parser._actions if a.dest == dest for s in a.option_strings]
    return any(arg == f or arg.startswith(f + "=") for arg in sys.argv[1:] for f in flags)


def _override_arguments(values: dict, applied: dict) -> None:
    """`--device` and `--seed` of verify reach a script that declares them with argparse, unless the
    script's own arguments (after `--`) already set them. `applied` records, per name, what happened:
    "passed", "given by the script's arguments", or nothing when the script has no such argument."""
    original = argparse.ArgumentParser.parse_known_args

    def parse_known_args(self, args=None, namespace=None):
        ns, extras = original(self, args, namespace)
        if args is None and ns is not None:
            for dest, value in values.items():
                if not hasattr(ns, dest):
                    continue
                if _given(self, dest):
                    applied[dest] = "given by the script's arguments"
                    continue
                current = getattr(ns, dest)
                setattr(ns, dest, type(current)(value) if current is not None and not isinstance(current, str)
                        else value)
                applied[dest] = "passed"
        return ns, extras

    argparse.ArgumentParser.parse_known_args = parse_known_args


def _filtered_traceback(error: BaseException) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(here) and os.path.basename(f.filename) != "runpy.py"
              and not f.filename.startswith("<frozen")]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames),
             *traceback.format_exception_only(type(error), error)]
    return "".join(lines)


def _seed(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        pass


def new_monitor(thresholds=None, progress=None, steps: Optional[int] = None):
    """The monitor as `gradlint verify` runs it, with its per-step callback: the step count to `progress`
    (a file), StopRun after `steps`. `benchmarks/verify_overhead.py` times this one. Attach it with
    `attach_global()`."""
    from .monitor import Monitor

    monitor = Monitor(thresholds, ratio_every=3)  # the report's update-to-weight ratio: 10 points in 30 steps
    monitor.reads.async_read = True  # CUDA: read each step's values once their copy is done, never stall the device
    monitor.max_steps = steps
    written = [0.0]  # when the progress file was last written

    def on_step(m: Monitor) -> None:
        # The parent reads the progress file every 0.1 s: a line every 50 ms is as good as one a step, and
        # saves a write system call on each of a fast loop's steps. `run` writes the last count at the end.
        if progress is not None and time.monotonic() - written[0] >= 0.05:
            progress.write(f"{m.steps}\n")
            written[0] = time.monotonic()

    monitor.on_step_end.append(on_step)
    return monitor


def _user_sys_path(ns) -> None:
    """`sys.path` as `python SCRIPT` (its real folder first) or `python -m MODULE` (the working directory
    first) would have it: without the entry `python -m gradlint.verify.harness` put first, and without the
    folder the parent added to PYTHONPATH so that this process finds gradlint."""
    added = os.environ.pop("GRADLINT_HARNESS_PATH", None)
    if added is not None:
        user = os.environ.pop("GRADLINT_USER_PYTHONPATH", None)
        if added in sys.path and added not in (user or "").split(os.pathsep):
            sys.path.remove(added)
        if user is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = user
    first = os.getcwd() if ns.module else os.path.dirname(os.path.realpath(ns.script))
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path[0] = first
    else:
        sys.path.insert(0, first)


def _main_module(path: str, loader):
    import types

    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=path, __cached__=None, __loader__=loader, __package__=None, __spec__=None,
                         __builtins__=__builtins__)
    return main


def _run_script(path: str, sources) -> None:
    """Run the file as `python path` does: as `__main__`, its own source (or its fixed text)."""
    import importlib.machinery

    text = sources.text_of(path) if sources is not None else None
    if text is not None:
        from .imports import remember_source

        sources.served.add(os.path.realpath(path))
        remember_source(path, text)
        code = compile(text, path, "exec", dont_inherit=True)
    else:
        with open(path, "rb") as f:
            code = compile(f.read(), path, "exec", dont_inherit=True)
    main = _main_module(path, importlib.machinery.SourceFileLoader("__main__", path))
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def run(ns) -> dict:
    record: dict = {"format": FORMAT, "status": None, "script": ns.script, "module": ns.module, "argv": ns.args,
                    "requested_steps": ns.steps, "seed": ns.seed if ns.seed is not None else 0, "error": None}
    _user_sys_path(ns)
    sources = None
    if ns.sources:
        from .imports import PatchedSources

        with open(ns.sources, encoding="utf-8") as f:
            sources = PatchedSources(json.load(f))
        sources.install()
    try:
        import torch
    except ImportError as error:
        record.update(status="error", error={"type": "ImportError", "message": f"torch is not importable: {error}",
                                             "hint": "pip install 'gradlint[verify]'"})
        return record

    from .imports import project_files
    from .monitor import StopRun, Thresholds
    from .trace import Tracer, nonfinite_state

    device = ns.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        record.update(status="error", error={"type": "DeviceError",
                                             "message": "--device cuda asked for, but torch.cuda.is_available() is False"})
        return record
    record.update(device_asked=ns.device, device_resolved=device, torch=torch.__version__)

    progress = open(ns.progress, "a", buffering=1, encoding="utf-8") if ns.progress else None
    monitor = new_monitor(Thresholds(**json.loads(ns.thresholds)), progress, ns.steps)

    tracer: Optional[Tracer] = None
    if ns.trace_step:
        tracer = Tracer(monitor.name_of, step=ns.trace_step)

        def arm() -> None:
            if tracer.origin is not None or tracer._armed:
                return
            state = nonfinite_state([(r.name if i else "", r.module) for i, r in enumerate(monitor.roots)])
            if state is not None:
                state["step"] = ns.trace_step
                tracer.origin = state
            else:
                tracer.arm()

        if ns.trace_step == 1:
            arm_now = True
        else:
            arm_now = False
            monitor.on_step_end.insert(0, lambda m: arm() if m.steps == ns.trace_step - 1 else None)
        # Replay eagerly: a compiled graph hides its ops from the tracer.
        torch.compile = lambda model=None, *a, **k: model if model is not None else (lambda m: m)

    overrides = {"device": device}
    if ns.seed is not None:
        overrides["seed"] = ns.seed
    applied: dict = {}
    _override_arguments(overrides, applied)
    script = ns.script if ns.module else os.path.abspath(ns.script)
    sys.argv = [script, *ns.args]
    _seed(ns.seed if ns.seed is not None else 0)
    signal.signal(signal.SIGTERM, _terminate)

    # torch warns that global hooks also fire for the OptimizedModule; the monitor expects that (the depth
    # count makes the wrapper the root), so the user need not see it.
    warnings.filterwarnings("ignore", message=r"Using `torch.compile\(module\)` when there are global hooks")
    monitor.attach_global()
    if tracer is not None and arm_now:
        arm()
    start = time.perf_counter()
    try:
        if ns.module:
            sys.argv[0] = "-m"  # as python sets it until the module is found; runpy puts its path there
            runpy.run_module(ns.script, run_name="__main__", alter_sys=True)
        else:
            _run_script(script, sources)
        record["status"] = "finished"
    except StopRun:
        record["status"] = "stopped"
    except Terminated:
        record["status"] = "timeout"
    except SystemExit as error:
        if error.code in (None, 0):
            record["status"] = "finished"
        else:
            record["status"] = "crashed"
            message = error.code if isinstance(error.code, str) else f"the script exited with status {error.code}"
            record["error"] = {"type": "SystemExit", "message": message, "traceback": None}
    except BaseException as error:  # the user's crash, reported, not raised
        record["status"] = "crashed"
        record["error"] = {"type": type(error).__name__, "message": str(error),
                           "traceback": _filtered_traceback(error)}
    finally:
        elapsed = time.perf_counter() - start
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if tracer is not None:
            tracer.disarm()
        monitor.flush(partial=record["status"] != "stopped")
        monitor.detach()
        if progress is not None:
            progress.write(f"{monitor.steps}\n")
            progress.close()
    record["seconds"] = round(elapsed, 3)
    record.update(monitor.record())
    if record["status"] == "finished" and monitor.steps == 0:
        record["status"] = "no_steps"
    if tracer is not None:
        record["trace"] = tracer.result()
    record["arguments"] = applied  # device/seed: passed to the script's argparse, or why not
    devices = sorted({str(p.device) for r in monitor.roots for p in r.module.parameters()})
    record["device"] = ", ".join(devices) if devices else None
    main_file = _module_file(ns.script) if ns.module else script
    record["project_files"] = project_files((main_file,) if main_file else (), _generated_code_dirs())
    record["main_file"] = os.path.realpath(main_file) if main_file else None
    if sources is not None:
        record["served"] = sorted(sources.served)
    return record


def _generated_code_dirs() -> tuple[str, ...]:
    """Where torch.compile wrote the Python it generated and imported (inductor's cache), if it ran."""
    utils = sys.modules.get("torch._inductor.runtime.cache_dir_utils")
    if utils is None:
        return ()
    try:
        return (utils.cache_dir(),)
    except Exception:
        return ()


def _module_file(name: str) -> Optional[str]:
    """The file `python -m name` ran (runpy took it back out of sys.modules); its packages are imported."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.has_location else None


def _terminate(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    ns = _parse(sys.argv[1:] if argv is None else argv)
    record = run(ns)
    _write(ns.record, record)
    sys.stdout.flush()
    return EXIT_NO_TORCH if record["status"] == "error" and record["error"]["type"] == "ImportError" else EXIT_OK


if __name__ == "__main__":
    code = main()
    # The record is written. The script may have left non-daemon threads (loader workers, loggers) that
    # would keep the process alive until the timeout, so leave now, without their atexit handlers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
