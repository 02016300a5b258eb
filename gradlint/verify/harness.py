"""The child process of `gradlint verify`: run a training script under the checks, write a JSON record.

    python -m gradlint.verify.harness --run-dir D --steps 30 --device auto train.py -- ARGS...
    python -m gradlint.verify.harness --run-dir D --module pkg.train -- ARGS...
    python -m torch.distributed.run ... -m gradlint.verify.harness --ranked --run-dir D train.py -- ARGS...

It runs in the user's working directory. The script runs as `__main__` with `sys.argv` set to
`[script, *ARGS]` and its folder first on `sys.path`, as `python train.py ARGS` would; a module (`-m`)
as `python -m pkg.train ARGS` would run it (the working directory first on `sys.path`, relative imports
working). Nothing in it is edited: the checks hang on module and optimizer hooks and a few wrapped torch
functions (see `monitor`, `patches`). The run stops after N steps with `StopRun`, a BaseException that
user code's `except Exception` lets pass. The record (`D/main.json`, see `instrument`) lists the project
files the run imported. Workers the script starts write records of their own in D (see `children`).

With `--ranked` this is one rank of a `torchrun` launch: its files are named after its rank (`D/rank1.json`),
its output goes to `D/rank1.stdout` and `.stderr`, and a crash of the script ends it with a non-zero
status, so that torchrun ends the other ranks instead of leaving them waiting in a collective.

With `--sources FILE` (a JSON object: real path -> fixed text) this is the patched run: those files are
served to the imports (and to the script itself) instead of the ones on disk (see `imports`).

With `--trace-step K` this is a replay: the same script, seed and arguments again, with the op-level
tracer armed from the start of step K (the first non-finite one), to name the op, module and line;
with `--trace-rank R`, on rank R only (where the value was born).
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
from typing import Optional

from .instrument import new_monitor  # noqa: F401  (the monitor as verify makes it: benchmarks time it)

FORMAT = 2
EXIT_OK, EXIT_CRASHED, EXIT_NO_TORCH = 0, 1, 3


class Terminated(BaseException):
    """SIGTERM from the parent at --timeout: unwind the user's code so that the record still gets written."""


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m gradlint.verify.harness")
    p.add_argument("--run-dir", required=True, help="the folder of this run's records (see `instrument`)")
    p.add_argument("--ranked", action="store_true", help="one rank of a torchrun launch")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int)
    p.add_argument("--trace-step", type=int)
    p.add_argument("--trace-rank", type=int)
    p.add_argument("--drift-every", type=int, default=10)
    p.add_argument("--thresholds", default="{}", help="JSON object of Thresholds fields")
    p.add_argument("--sources", help="JSON file: real path -> fixed text, served in place of those files")
    p.add_argument("--module", action="store_true", help="SCRIPT is a module name, run as `python -m`")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    ns = p.parse_args(argv)
    if ns.args[:1] == ["--"]:
        ns.args = ns.args[1:]
    return ns


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


def filtered_traceback(error: BaseException) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(here) and os.path.basename(f.filename) != "runpy.py"
              and not f.filename.startswith("<frozen")]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames),
             *traceback.format_exception_only(type(error), error)]
    return "".join(lines)


def stopped_at(error: BaseException) -> dict:
    """Where the user's code was when SIGTERM stopped it (a hang: the line it hangs on)."""
    from .sites import is_user

    frames = [f for f in traceback.extract_tb(error.__traceback__) if is_user(f.filename)]
    site = None
    if frames:
        frame = frames[-1]
        site = {"file": frame.filename, "line": frame.lineno, "function": frame.name, "code": (frame.line or "").strip()}
    where = f"at {os.path.basename(site['file'])}:{site['line']}: {site['code']}" if site else "outside the script"
    return {"type": "Terminated", "message": f"stopped {where}", "traceback": filtered_traceback(error), "site": site}


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:
        pass


def _user_sys_path(ns) -> None:
    """`sys.path` as `python SCRIPT` (its real folder first) or `python -m MODULE` (the working directory
    first) would have it: without the entry `python -m gradlint.verify.harness` put first, and without the
    folder the parent added to PYTHONPATH so that this process finds gradlint."""
    added = os.environ.pop("GRADLINT_HARNESS_PATH", None)
    if added is not None:
        user = os.environ.pop("GRADLINT_USER_PYTHONPATH", None)
        if added in sys.path and added not in (user or "").split(os.pathsep):
            sys.path.remove(added)
            from .children import set_import_path

            set_import_path(added)  # for the workers a script spawns: they must import gradlint first
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


def who_am_i(ns) -> str:
    """The name of this process's files in the run folder: `main`, or `rank<RANK>` under torchrun."""
    return f"rank{os.environ.get('RANK', '0')}" if ns.ranked else "main"


def _redirect_output(run_dir: str, who: str) -> None:
    """A rank's output to files of its own (torchrun would interleave the ranks' lines on one stream)."""
    for fd, kind in ((1, "stdout"), (2, "stderr")):
        target = os.open(os.path.join(run_dir, f"{who}.{kind}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)


def run(ns, who: str) -> dict:
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

    from .children import SelfLaunchingScript
    from .instrument import Config, Instrumented
    from .monitor import StopRun

    device = ns.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        record.update(status="error", error={"type": "DeviceError",
                                             "message": "--device cuda asked for, but torch.cuda.is_available() is False"})
        return record
    record.update(device_asked=ns.device, device_resolved=device, torch=torch.__version__)

    config = Config(run_dir=ns.run_dir, steps=ns.steps, thresholds=json.loads(ns.thresholds), seed=ns.seed,
                    trace_step=ns.trace_step, trace_rank=ns.trace_rank, drift_every=ns.drift_every)
    instrumented = Instrumented(config, who, ranked=ns.ranked)

    overrides = {"device": device}
    if ns.seed is not None:
        overrides["seed"] = ns.seed
    applied: dict = {}
    _override_arguments(overrides, applied)
    script = ns.script if ns.module else os.path.abspath(ns.script)
    sys.argv = [script, *ns.args]
    seed_everything(ns.seed if ns.seed is not None else 0)
    signal.signal(signal.SIGTERM, _terminate)

    instrumented.start()
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
    except Terminated as error:
        record["status"] = "terminated" if ns.ranked else "timeout"
        record["error"] = stopped_at(error)
    except SelfLaunchingScript as error:
        record["status"] = "error"
        record["error"] = {"type": "LaunchError", "message": str(error), "traceback": None}
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
                           "traceback": filtered_traceback(error)}
    finally:
        elapsed = time.perf_counter() - start
        record["ended_at"] = time.time()  # which rank's crash came first (the others' may follow from it)
        # A second SIGTERM (torchrun passes on the one the parent sent it) must not cut the record short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        instrumented.stop(record["status"] or "crashed")
    record["seconds"] = round(elapsed, 3)
    main_file = _module_file(ns.script) if ns.module else script
    record.update(instrumented.record(main_file))
    if record["status"] == "finished" and instrumented.monitor.steps == 0:
        record["status"] = "no_steps"
    record["arguments"] = applied  # device/seed: passed to the script's argparse, or why not
    record["main_file"] = os.path.realpath(main_file) if main_file else None
    if sources is not None:
        record["served"] = sorted(sources.served | set(record.get("served") or ()))
    return record


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
    from .instrument import path, write_json

    ns = _parse(sys.argv[1:] if argv is None else argv)
    who = who_am_i(ns)
    os.makedirs(ns.run_dir, exist_ok=True)
    if ns.ranked:
        _redirect_output(ns.run_dir, who)
    record = run(ns, who)
    write_json(path(ns.run_dir, who, "json"), record)
    sys.stdout.flush()
    if record["status"] == "error" and record["error"]["type"] == "ImportError":
        return EXIT_NO_TORCH
    # A rank whose script crashed says so to torchrun, which then ends the others (they would wait for it in
    # their next collective until the timeout).
    return EXIT_CRASHED if ns.ranked and record["status"] in ("crashed", "error") else EXIT_OK


if __name__ == "__main__":
    code = main()
    # The record is written. The script may have left non-daemon threads (loader workers, loggers) that
    # would keep the process alive until the timeout, so leave now, without their atexit handlers.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
