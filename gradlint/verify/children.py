"""The checks in the worker processes a script starts: `torch.multiprocessing.spawn`, `mp.Process` with a DDP
body, and (their imports only) DataLoader workers.

A worker runs `BaseProcess._bootstrap`, which calls its `run()`. That method is wrapped, in the harness's
process (a forked worker inherits the wrapper with the rest of the memory) and in a spawned or
forkserver worker (see below): each worker but a DataLoader's runs its `run()` under an `Instrumented` of
its own, with the run's step limit (a `StopRun` there ends the worker as if its function had returned:
exit status 0, so `mp.spawn` and `join()` go on) and its own record in the run's folder. A forked
worker first takes off the parent's monitor that the fork copied.

A spawned worker is a new interpreter: it gets the parent's state through the "preparation data" that
`multiprocessing` pickles for it, which is unpickled before anything of the user's is imported (the
parent's `__main__` included). An entry added to that data (`_Prepare`) installs, in the worker, the
import hook that serves the fixed sources to the patched run (the fixed `__main__` too) and the `run()`
wrapper. DataLoader workers get the import hook only.

Torch-free at import: a spawned worker imports this module before anything else.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional

_state: dict = {"current": None, "config": None, "saved": [], "ranked": False, "owner": None,
                "child_path": None}  # child_path: the folder gradlint is imported from, if not installed


class SelfLaunchingScript(RuntimeError):
    """`torch.multiprocessing.spawn` in a rank that torchrun (`--nproc-per-node`) already started."""


def install(instrumented, ranked: bool = False) -> None:
    """In a process under the checks: workers it starts run under checks of their own."""
    import multiprocessing.process as process
    import multiprocessing.spawn as spawn

    uninstall()  # a worker's own patches (spawned), or the copy of its parent's (forked)
    _state.update(current=instrumented, config=instrumented.config.to_dict(), owner=os.getpid(),
                  ranked=ranked)
    _patch(process.BaseProcess, "_bootstrap", _wrap_bootstrap(process.BaseProcess._bootstrap))
    _patch(process.BaseProcess, "start", _wrap_start(process.BaseProcess.start))
    _patch(spawn, "get_preparation_data", _wrap_preparation(spawn.get_preparation_data))


def uninstall() -> None:
    """The patches off (in a forked worker, off its copy of them)."""
    while _state["saved"]:
        owner, name, original = _state["saved"].pop()
        setattr(owner, name, original)
    _state["current"] = None


def _patch(owner, name: str, replacement) -> None:
    _state["saved"].append((owner, name, getattr(owner, name)))
    setattr(owner, name, replacement)


# -- in the parent ---------------------------------------------------------------------------------------

def _torch_spawn_wrap():
    module = sys.modules.get("torch.multiprocessing.spawn")
    return getattr(module, "_wrap", None)


def _wrap_start(original):
    def start(self):
        if _state["ranked"] and self._target is not None and self._target is _torch_spawn_wrap():
            raise SelfLaunchingScript(
                "the script starts its own workers (torch.multiprocessing.spawn), and verify already started it "
                "under torchrun (--nproc-per-node): every rank would start a group of its own. Verify it as you "
                "run it, without --nproc-per-node: verify checks the workers it starts")
        harness_path = _state["child_path"]
        if harness_path is None:
            return original(self)
        # A spawned interpreter must find gradlint before `prepare()` gives it the parent's sys.path.
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = harness_path + (os.pathsep + saved if saved else "")
        try:
            return original(self)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved

    start.__wrapped__ = original
    return start


def set_import_path(folder: Optional[str]) -> None:
    """Where this process imported gradlint from, when a new interpreter would not find it (a checkout on
    PYTHONPATH that the harness took off again): spawned workers get it for their start only."""
    _state["child_path"] = folder


def _user_pythonpath() -> Optional[str]:
    """PYTHONPATH as the user set it (`start` adds gradlint's folder while a worker starts)."""
    value = os.environ.get("PYTHONPATH")
    folder = _state["child_path"]
    if value is not None and folder is not None and value.split(os.pathsep)[0] == folder:
        rest = value.split(os.pathsep, 1)[1:]
        return rest[0] if rest else None
    return value


def _wrap_preparation(original):
    def get_preparation_data(name):
        data = original(name)
        sources = None
        from .imports import PatchedSources

        for finder in sys.meta_path:
            if isinstance(finder, PatchedSources):
                sources = finder.sources
                break
        state = {"config": _state["config"], "sources": sources, "ranked": _state["ranked"],
                 "pythonpath": _user_pythonpath(), "child_path": _state["child_path"]}
        return {"gradlint": _Prepare(state), **data}  # first: unpickled before the rest is acted on

    get_preparation_data.__wrapped__ = original
    return get_preparation_data


class _Prepare:
    def __init__(self, state: dict):
        self.state = state

    def __reduce__(self):
        return _prepare_worker, (self.state,)


# -- in the worker ---------------------------------------------------------------------------------------

def _prepare_worker(state: dict) -> None:
    """Runs in a spawned worker while its preparation data is unpickled, before `prepare()` imports the
    parent's `__main__`."""
    import multiprocessing.process as process
    import multiprocessing.spawn as spawn

    if state.get("pythonpath") is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = state["pythonpath"]
    _state.update(config=state["config"], ranked=state["ranked"], owner=os.getpid(), child_path=state["child_path"])
    if state.get("sources"):
        from .imports import PatchedSources

        sources = PatchedSources(state["sources"])
        sources.install()
        spawn._fixup_main_from_path = _fixed_main(spawn._fixup_main_from_path, sources)
    if state["config"] is not None:
        from . import patches

        patches.install_early()  # before `prepare()` runs the main module: its imports bind the wrappers
    _patch(process.BaseProcess, "_bootstrap", _wrap_bootstrap(process.BaseProcess._bootstrap))
    return None


def _fixed_main(original, sources):
    """`prepare()` runs the parent's main script again as `__mp_main__` (by `runpy.run_path`, which reads
    the file): the patched run's worker runs its fixed text instead."""

    def fixup(main_path):
        text = sources.text_of(main_path)
        if text is None:
            return original(main_path)
        import runpy

        from .imports import remember_source

        run_path = runpy.run_path

        def run_fixed(path, init_globals=None, run_name=None):
            sources.served.add(os.path.realpath(path))
            remember_source(path, text)
            namespace = dict(init_globals or {}, __name__=run_name, __file__=path, __cached__=None,
                             __loader__=None, __package__=None, __spec__=None, __builtins__=__builtins__)
            exec(compile(text, path, "exec", dont_inherit=True), namespace)
            return namespace

        runpy.run_path = run_fixed
        try:
            return original(main_path)
        finally:
            runpy.run_path = run_path

    return fixup


def _is_data_worker(target) -> bool:
    worker = sys.modules.get("torch.utils.data._utils.worker")
    return worker is not None and target is getattr(worker, "_worker_loop", None)


def _wrap_bootstrap(original):
    def _bootstrap(self, *args, **kwargs):
        if _state["config"] is not None and not _is_data_worker(getattr(self, "_target", None)):
            run = self.run
            self.run = lambda: _run_instrumented(self, run)
        return original(self, *args, **kwargs)

    _bootstrap.__wrapped__ = original
    return _bootstrap


class _Outcome:
    def __init__(self):
        self.status: Optional[str] = None
        self.error: Optional[dict] = None


def _error(error: BaseException) -> dict:
    from .harness import filtered_traceback

    return {"type": type(error).__name__, "message": str(error), "traceback": filtered_traceback(error)}


def _catching(fn, outcome: _Outcome):
    """The user's function inside torch's `_wrap`, which turns any Exception into `sys.exit(1)`: its own
    exception is recorded here first; the step limit returns normally (exit status 0)."""
    from .monitor import StopRun

    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StopRun:
            outcome.status = "stopped"
            return None
        except Exception as error:
            outcome.status, outcome.error = "crashed", _error(error)
            raise

    return call


def _run_instrumented(process, run) -> None:
    import signal

    from .harness import Terminated, seed_everything
    from .instrument import Config, Instrumented
    from .monitor import StopRun

    inherited = _state["current"]
    if inherited is not None:  # forked: the parent's monitor came along
        inherited.abandon()
        _state["current"] = None
    else:  # spawned: a fresh interpreter, seeded as the harness seeds the script
        seed_everything(_state["config"].get("seed") or 0)
    config = Config(**_state["config"])
    instrumented = Instrumented(config, f"child{os.getpid()}")
    outcome = _Outcome()
    if getattr(process, "_target", None) is not None and process._target is _torch_spawn_wrap() and process._args:
        process._args = (_catching(process._args[0], outcome), *process._args[1:])

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    instrumented.start()
    start = time.perf_counter()
    try:
        run()
        outcome.status = outcome.status or "finished"
    except StopRun:
        outcome.status = "stopped"
    except (Terminated, KeyboardInterrupt) as error:
        from .harness import stopped_at

        outcome.status, outcome.error = "terminated", stopped_at(error)
        raise
    except SystemExit as error:
        if outcome.status is None:
            outcome.status = "finished" if error.code in (None, 0) else "crashed"
            if outcome.status == "crashed":
                outcome.error = {"type": "SystemExit", "message": f"the worker exited with status {error.code}",
                                 "traceback": None}
        raise
    except BaseException as error:
        outcome.status, outcome.error = "crashed", outcome.error or _error(error)
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the record short
        ended_at = time.time()
        instrumented.stop(outcome.status or "crashed")
        record = instrumented.record()
        record.update(status=outcome.status, error=outcome.error, seconds=round(time.perf_counter() - start, 3),
                      requested_steps=config.steps, seed=config.seed if config.seed is not None else 0,
                      worker=True, ended_at=ended_at)
        if record["status"] == "finished" and instrumented.monitor.steps == 0:
            record["status"] = "no_steps"
        instrumented.write(record)
        signal.signal(signal.SIGTERM, previous)
