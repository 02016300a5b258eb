"""`gradlint verify PATH | -m MODULE`: run the training code as it is and with gradlint's fixes, and compare.

Torch-free on purpose: torch is imported only by the child processes (`harness`), so `--help` works
without it and a missing torch gets one clear line. Both runs execute in the user's working directory
with the user's `sys.path`, as `python PATH` (or `python -m MODULE`) would; with `--nproc-per-node N`,
under torchrun, every rank checked and the ranks merged into one report (`merge`, `rankchecks`). The
original run tells which project files it imported; the fixes of exactly those files are served to the
patched run by an import hook. The user's files are only read; `--keep DIR` writes the fixed ones there.

Exit status: 0 the patched run is healthy, 1 it is not, 2 no verdict (bad input, a crash or hang that
the patch does not remove, torch missing).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from gradlint.notebook import NotebookError, notebook_script

from . import distributed_options
from .checks import healthy, steps_phrase
from .merge import add_trace
from .notebook import dropped_notes, in_cells, is_notebook, script_of
from .origin import rules_at
from .patch import PatchResult, attribute, fix_files, keep, shown
from .rankchecks import checks_of, rank_summaries, rank_table
from .report import patch_lines, table, verdict
from .runner import Progress, RunSpec, run_harness

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_ERROR = 0, 1, 2
SCRIPT_NAMES = ("train.py", "main.py")
RAN = ("stopped", "finished")
SCHEMA = 2  # of the --json document; see README


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, not {text!r}")


def _module_name(text: str) -> str:
    if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", text):
        return text
    raise argparse.ArgumentTypeError(f"not a module name: {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run a training script (or a folder's train.py, or a module with -m) for N steps under "
                          "cheap health checks, in your working directory, then again with gradlint's fixes "
                          "served to the files it imported, and show both side by side. Your files are never "
                          "modified.")
    parser.allow_abbrev = False  # `--e 5` meant for the script must not become --exploding
    parser.add_argument("path", metavar="PATH", nargs="?",
                        help="a training script, or a folder with train.py or main.py")
    parser.add_argument("-m", "--module", type=_module_name, metavar="MODULE",
                        help="run a module as `python -m MODULE` does (instead of PATH)")
    parser.add_argument("--steps", type=int, default=30, metavar="N",
                        help="training steps per run (default: 30); with several optimizers, N steps of each")
    parser.add_argument("--device", type=_device, default="auto", metavar="cpu|cuda|auto",
                        help="passed to a script that has a --device argument (default: auto, CUDA if present)")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="seed for torch/random/numpy, and for a script's --seed argument (default: 0, the "
                             "script's own default for its argument)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="S",
                        help="seconds per run before it is killed (default: 300)")
    parser.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--keep", metavar="DIR", help="write the fixed files in DIR")
    parser.add_argument("--vanishing", type=float, default=1e-7, metavar="X",
                        help="a layer's grad norm below X in most steps is vanishing (default: 1e-7)")
    parser.add_argument("--exploding", type=float, default=100.0, metavar="X",
                        help="a layer's applied grad norm above X is exploding (default: 100)")
    parser.add_argument("--window", type=int, default=10, metavar="N",
                        help="steps a unit must stay dead or saturated to be reported (default: 10)")
    parser.add_argument("--no-pinpoint", action="store_true",
                        help="do not replay the first non-finite step to find its op and line")
    parser.add_argument("--unsafe-fixes", action="store_true",
                        help="apply the unsafe fixes too (they change results beyond the defect: verify shows how)")
    distributed_options.add_arguments(parser)
    parser.usage = ("%(prog)s PATH | -m MODULE [--steps N] [--device cpu|cuda|auto] [--timeout S] "
                    "[--report FILE.html] [--json] [--keep DIR] [--nproc-per-node N] [options] [-- ARGS]")
    parser.epilog = "Arguments after `--` are the script's own: gradlint verify train.py --steps 20 -- --lr 0.1"
    parser.set_defaults(script_args=[])
    _split_at_double_dash(parser)


def _split_at_double_dash(parser: argparse.ArgumentParser) -> None:
    """Everything after the first `--` is the script's, whatever it looks like. argparse cannot say so with a
    positional after PATH and options in between (it assigns an empty list to the first run of positionals),
    so the subparser splits its arguments before parsing them. Arguments verify does not know, before any
    `--`, are the script's flags without their `--`: an error that says so."""
    original = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        script_args: list[str] = []
        if "--" in args:
            at = args.index("--")
            args, script_args = args[:at], args[at + 1:]
        namespace, extras = original(args, namespace)
        if extras:
            target = f"-m {namespace.module}" if getattr(namespace, "module", None) else (namespace.path or "PATH")
            parser.error(f"unrecognized arguments: {' '.join(extras)}\n"
                         "the script's own arguments go after `--`: "
                         f"gradlint verify {target} -- {shlex.join([*extras, *script_args])}")
        namespace.script_args = script_args
        return namespace, extras

    parser.parse_known_args = parse_known_args


def _find_script(path: Path) -> Optional[Path]:
    if path.is_dir():
        return next((path / n for n in SCRIPT_NAMES if (path / n).is_file()), None)
    return path if path.is_file() else None


def _not_python(path: Path) -> Optional[str]:
    """Why `path` is not a Python script to run, or None. Never runs or imports it."""
    if path.suffix in (".py", ".pyw", ".ipynb"):  # a notebook runs as its code cells' script (see `notebook`)
        return None
    try:
        with open(path, "rb") as f:
            first = f.readline(200)
    except OSError as error:
        return f"not readable: {error}"
    if first.startswith(b"#!") and b"python" in first:
        return None
    return "not a Python file (a .py script, a folder with train.py or main.py, or -m MODULE)"


class _Session:
    def __init__(self, args: argparse.Namespace, target: str, work: Path, progress: Progress):
        self.args, self.target, self.work, self.progress = args, target, work, progress
        self.script_args = list(args.script_args or [])
        if self.script_args[:1] == ["--"]:
            self.script_args = self.script_args[1:]
        self.thresholds = {"vanishing": args.vanishing, "exploding": args.exploding, "window": args.window}

    def run(self, label: str, sources: Optional[Path], trace_step: Optional[int] = None,
            steps: Optional[int] = None, trace_rank: Optional[int] = None) -> dict:
        spec = RunSpec(label=label, script=self.target, cwd=Path.cwd(), args=self.script_args,
                       steps=steps or self.args.steps, device=self.args.device, seed=self.args.seed,
                       timeout=self.args.timeout, thresholds=self.thresholds, trace_step=trace_step,
                       trace_rank=trace_rank, module=bool(self.args.module), sources=sources,
                       nproc=self.args.nproc_per_node, drift_every=self.args.drift_every)
        record = run_harness(spec, self.work / "runs", self.progress)
        self.progress.done(label, _short_status(record), record.get("wall_seconds", 0.0))
        return record

    def run_and_pinpoint(self, label: str, sources: Optional[Path] = None) -> dict:
        record = self.run(label, sources)
        first = record.get("first_nonfinite")
        if first is None or self.args.no_pinpoint or record.get("status") not in RAN + ("crashed",):
            return record
        step = first["step"]
        replay = self.run(f"{label} replay", sources, trace_step=step, steps=step, trace_rank=first.get("rank"))
        record["ended"] = replay.get("ended", record.get("ended"))
        if replay.get("trace") is None:
            record["replay_status"] = (f"the replay of step {step} did not find it (status {replay.get('status')}); "
                                       "is the script deterministic for a fixed seed?")
        elif not _same_prefix(record, replay, step):
            record["replay_status"] = "the replay's earlier steps differed from the run's (non-deterministic ops?)"
        add_trace(record, replay)
        return record


def _same_prefix(record: dict, replay: dict, step: int) -> bool:
    a = [r.get("loss") for r in record.get("rows", []) if r["step"] < step]
    b = [r.get("loss") for r in replay.get("rows", []) if r["step"] < step]
    return a == b


def _short_status(record: dict) -> str:
    status = record.get("status")
    if status in RAN:
        nonfinite = record.get("first_nonfinite")
        extra = f", non-finite from step {nonfinite['step']}" if nonfinite else ""
        if record.get("trace"):
            extra = ", pinpointed"
        return f"{steps_phrase(record)}{extra}"
    if status == "crashed" and record.get("trace"):
        return "crashed, pinpointed"
    return status or "error"


def _shown_paths(value, cwd: str):
    """Every `file` of a record's sites as the user would type it (relative to the working directory)."""
    if isinstance(value, list):
        return [_shown_paths(v, cwd) for v in value]
    if isinstance(value, dict):
        return {k: (shown(v, cwd) if k == "file" and isinstance(v, str) and os.path.isabs(v) else _shown_paths(v, cwd))
                for k, v in value.items()}
    return value


def _error(message: str) -> int:
    print(f"gradlint verify: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _target(args: argparse.Namespace) -> tuple[Optional[str], Optional[str]]:
    """(what the harness runs: a script's path or a module name, or None; the error otherwise)."""
    if args.module:
        if args.path:
            return None, (f"give PATH or -m MODULE, not both (a PATH after -m {args.module} belongs after `--`: "
                          f"gradlint verify -m {args.module} -- {args.path})")
        return args.module, None
    if not args.path:
        return None, "give a training script, a folder with train.py or main.py, or -m MODULE"
    path = Path(args.path)
    if not path.exists():
        return None, f"{args.path}: no such file or directory"
    script = _find_script(path)
    if script is None:
        return None, (f"{args.path}: no {' or '.join(SCRIPT_NAMES)} in this folder; pass the training script "
                      "itself")
    why = _not_python(script)
    if why is not None:
        return None, f"{args.path}: {why}"
    return str(script.resolve()), None


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    launcher_problem = distributed_options.problem(args)
    if launcher_problem:
        # under torchrun every copy would say it: the first rank speaks for all
        quiet = os.environ.get("LOCAL_RANK", "0") not in ("", "0")
        return EXIT_ERROR if quiet else _error(launcher_problem)
    target, problem = _target(args)
    if problem:
        return _error(problem)
    if importlib.util.find_spec("torch") is None:
        return _error("torch is not installed; verify runs the training code and needs it: "
                      "pip install 'gradlint[verify]'")
    if args.steps < 1:
        return _error("--steps must be at least 1")

    notebook = None  # the script a kernel would run, for a notebook
    if not args.module and is_notebook(target):
        try:
            notebook = script_of(target)
        except (NotebookError, OSError, UnicodeDecodeError) as error:
            return _error(f"{args.path}: {error}")
    kept = Path(args.keep) if args.keep else None
    if kept is not None and kept.exists() and (not kept.is_dir() or any(kept.iterdir())):
        return _error(f"--keep {kept}: exists and is not an empty folder")

    cwd = os.getcwd()
    # The fixing engine (LibCST, the rules) loads while the original run trains: the patched run then starts
    # as soon as the files it imported are fixed.
    threading.Thread(target=_load_engine, daemon=True).start()
    work = Path(tempfile.mkdtemp(prefix="gradlint-verify-"))
    progress = Progress(sys.stderr, enabled=not args.json or sys.stderr.isatty())
    timing: dict = {}
    try:
        session = _Session(args, target, work, progress)
        # A notebook runs as its script, served in place of the notebook's own text by the import hook.
        served = {target: notebook.text} if notebook is not None else {}
        original = session.run_and_pinpoint("original", _sources(work / "original.json", served))
        ended = time.time()
        files = (original.get("project_files") or []) + ([target] if notebook is not None else [])
        patch = fix_files(files, unsafe=args.unsafe_fixes, cwd=cwd)
        timing["fix_seconds"] = round(patch.seconds, 3)
        patched = None
        if patch.files and _run_patched(original, patch):
            sources = _sources(work / "sources.json", {**served, **patch.sources()})
            patched = session.run_and_pinpoint("patched", sources)
            timing["patched_start_after_original_end"] = round(patched["started"] - ended, 3)
        attribute(patch, unsafe=args.unsafe_fixes)
        if kept is not None:
            anchor = os.path.dirname(target) if not args.module else cwd
            keep(patch, kept, anchor)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if patched is None:
        if original.get("status") == "crashed":
            reason = "the original run crashed and no fix applies"
        elif not patch.files:
            reason = "no fix applies: the patched run would be the original"
        else:
            reason = "the original run did not get to train"
        patched = {"status": "skipped", "reason": f"not run: {reason}"}
    if notebook is not None:  # the script's rows as the notebook's cells
        fixed = next((f for f in patch.files if f.real == target), None)
        original = in_cells(original, target, notebook)
        patched = in_cells(patched, target, notebook_script(fixed.text) if fixed is not None else notebook)
    original, patched = _shown_paths(original, cwd), _shown_paths(patched, cwd)
    result = _compare(args, target, patch, original, patched, timing)
    if notebook is not None:
        result["notebook"] = {"code_cells": len(notebook.cells), "not_run": dropped_notes(notebook)}
    if args.report:
        from .html import render

        Path(args.report).write_text(render(result), encoding="utf-8")
    if args.json:
        json.dump(result, out, indent=2)
        out.write("\n")
    else:
        _print_text(result, out, color=out.isatty() and os.environ.get("NO_COLOR") is None)
        if args.report:
            print(f"report: {args.report}", file=out)
    return result["exit_code"]


def _sources(path: Path, texts: dict) -> Optional[Path]:
    """A JSON file of real path -> text for the harness to serve (None when there is nothing to serve)."""
    if not texts:
        return None
    path.write_text(json.dumps(texts), encoding="utf-8")
    return path


def _load_engine() -> None:
    try:
        from gradlint.engine import fix_text
        from gradlint.registry import all_rules

        fix_text("import torch\n", "warm-up.py", all_rules(), {})
    except Exception:  # fix_files reports any real problem
        pass


def _run_patched(original: dict, patch: PatchResult) -> bool:
    status = original.get("status")
    if status in RAN:
        return True
    # A crash may be the defect itself (an assert on a NaN loss): try the fixed code, if anything was fixed.
    return status == "crashed" and patch.fixed > 0


def _exit_code(original: dict, patched: dict, patched_healthy: bool) -> int:
    if original.get("status") in ("error", "no_steps", "timeout"):
        return EXIT_ERROR
    if patched.get("status") not in RAN:
        return EXIT_ERROR
    return EXIT_HEALTHY if patched_healthy else EXIT_UNHEALTHY


def _series(record: dict) -> list[dict]:
    """Per series (each optimizer's, or the backward steps): step, loss, applied and pre-clip norm."""
    rows = record.get("rows") or []
    out = []
    for s in record.get("series") or [{"index": 0, "name": "optimizer", "kind": "optimizer", "steps": 0}]:
        mine = [r for r in rows if r.get("series", 0) == s["index"]]
        out.append({"index": s["index"], "name": s["name"], "kind": s["kind"], "step": [r["step"] for r in mine],
                    "loss": [r.get("loss") for r in mine], "total_norm": [r.get("total") for r in mine],
                    "clip_before": [(r.get("clips") or [{}])[0].get("before") for r in mine],
                    "skipped": [bool(r.get("skipped")) for r in mine],
                    "layer_norms": [r.get("norms") for r in mine]})
    return out


def _merged_norms(record: dict) -> list:
    """Per step number, each layer's gradient norm from whichever series' step has it: with several
    optimizers (each owning its layers) one row per iteration, every layer filled."""
    merged: dict[int, list] = {}
    for r in record.get("rows") or []:
        norms = r.get("norms") or []
        row = merged.setdefault(r["step"], [None] * len(norms))
        row.extend([None] * (len(norms) - len(row)))
        for i, v in enumerate(norms):
            if row[i] is None:
                row[i] = v
    return [merged[k] for k in sorted(merged)]


def _identical(original: dict, patched: dict) -> bool:
    """Both runs computed the same numbers at every step (losses, per-layer gradient norms)."""
    def numbers(record):
        return [(r.get("series"), r.get("loss"), r.get("norms")) for r in record.get("rows") or []]
    return bool(original.get("rows")) and numbers(original) == numbers(patched)


def _notes(original: dict, patched: dict, patch: PatchResult) -> list[str]:
    if patched.get("status") == "skipped" or not patch.files:
        return []
    served = set(patched.get("served") or [])
    patched_files = {f.real for f in patch.files}
    if not served & patched_files:
        return ["the patched run never imported a fixed file: the patch cannot have changed it"]
    if original.get("status") in RAN and patched.get("status") in RAN and _identical(original, patched):
        return ["the two runs are identical (the same loss and gradient norms at every step): the patch changed "
                "nothing this run could show"]
    return []


def _device_note(args, record: dict) -> Optional[str]:
    passed = (record.get("arguments") or {}).get("device")
    if args.device == "auto" or passed == "passed" or record.get("status") in ("error", "skipped"):
        return None
    used = record.get("device") or "no model found"
    if passed is None:
        return (f"--device {args.device} was not passed: the script has no --device argument (give its own flag "
                f"after `--`); its tensors were on {used}")
    return f"--device {args.device} was not passed: the script's own --device (after `--`) was kept; tensors on {used}"


def _compare(args, target: str, patch: PatchResult, original: dict, patched: dict, timing: dict) -> dict:
    from gradlint import __version__

    checks_o, checks_p = checks_of(original), checks_of(patched)
    decisive = patched if patched.get("status") != "skipped" or patch.files else original
    checks_d = checks_of(decisive)
    decisive_healthy = healthy(checks_d)
    code = _exit_code(original, decisive, decisive_healthy)
    notes = _notes(original, patched, patch)
    fixed_codes = {f.path: f.codes for f in patch.files}
    runs = {}
    for name, record, checks in (("original", original, checks_o), ("patched", patched, checks_p)):
        series = _series(record)
        trace = record.get("trace")
        if trace:  # the rule that would have caught it: gradlint's findings on the origin's lines
            trace = dict(trace, rules=rules_at(trace, fixed_codes))
        runs[name] = {
            "status": record.get("status"), "steps": record.get("steps", 0), "device": record.get("device"),
            "seconds": record.get("seconds"), "error": record.get("error"), "reason": record.get("reason"),
            "first_nonfinite": record.get("first_nonfinite"), "trace": trace,
            "updates": record.get("updates"),
            "checks": [c.to_dict() for c in checks], "healthy": healthy(checks),
            "series": series[0] if series else {}, "optimizers": series,
            "layers": record.get("layers") or [], "layer_norms": _merged_norms(record),
            "norm_steps": sorted({r["step"] for r in record.get("rows") or []}),
            "forwards": record.get("forwards"), "project_files": [shown(p) for p in record.get("project_files") or []],
            "served": [shown(p) for p in record.get("served") or []],
            "stdout_tail": record.get("stdout_tail", ""), "stderr_tail": record.get("stderr_tail", ""),
            "distributed": record.get("distributed"), "ranks": rank_summaries(record),
            "rank_table": rank_table(record),
        }
        launcher_hint = distributed_options.hint(record, args)
        if launcher_hint and runs[name]["error"]:
            runs[name]["error"] = dict(runs[name]["error"], hint=launcher_hint)
    device_note = _device_note(args, original)
    script = shown(target) if not args.module else None
    the_verdict = verdict(checks_o, checks_d if not patch.files else checks_p, decisive_healthy, code,
                          _no_verdict_reason(original, patched, patch), tuple(notes), patched_ran=bool(patch.files))
    return {
        "schema": SCHEMA, "gradlint": __version__, "torch": original.get("torch"),
        "command": ["gradlint", "verify", *sys.argv[sys.argv.index("verify") + 1:]] if "verify" in sys.argv else None,
        "path": args.path, "module": args.module, "script": script, "cwd": os.getcwd(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc_per_node": getattr(args, "nproc_per_node", None),
        "steps": args.steps, "seed": original.get("seed", args.seed if args.seed is not None else 0),
        "device": {"asked": args.device, "resolved": original.get("device_resolved"), "used": original.get("device"),
                   "note": device_note},
        "thresholds": original.get("thresholds"), "timing": timing,
        "patch": patch.to_dict(), "original": runs["original"], "patched": runs["patched"],
        "healthy": code == EXIT_HEALTHY, "exit_code": code, "verdict": the_verdict,
    }


def _no_verdict_reason(original: dict, patched: dict, patch: PatchResult) -> str:
    if patched.get("status") == "skipped" and original.get("status") == "crashed":
        return patched.get("reason", "the patched run did not start")
    runs = [("original", original)] + ([("patched", patched)] if patch.files else [])
    for name, record in runs:
        status = record.get("status")
        if status == "no_steps":
            return f"the {name} run never trained (no optimizer.step(), no backward followed by cleared gradients)"
        if status in ("timeout", "crashed", "error"):
            error = record.get("error") or {}
            on = f" on {error['rank_label']}" if error.get("rank_label") else ""
            what = {"timeout": "timed out", "error": "could not start"}.get(status, status)
            return f"the {name} run {what}{on}: {error.get('message', '')}".rstrip(": ")
    return ""


def _print_text(result: dict, out, color: bool) -> None:
    from .checks import Check

    o, p = result["original"], result["patched"]
    target = f"-m {result['module']}" if result["module"] else result["path"]
    if result.get("nproc_per_node"):
        target = f"--nproc-per-node {result['nproc_per_node']} {target}"
    used = result["device"]["used"] or result["device"]["resolved"] or result["device"]["asked"]
    print(f"gradlint verify {target}  ({used}, {result['steps']} steps, seed {result['seed']}, "
          f"torch {result.get('torch') or '?'}, gradlint {result['gradlint']})", file=out)
    if result["device"]["note"]:
        print(result["device"]["note"], file=out)
    if result.get("notebook"):
        notebook = result["notebook"]
        print(f"notebook: its {notebook['code_cells']} code cells ran in order as one script", file=out)
        for note in notebook["not_run"]:
            print(f"  {note}", file=out)
    for line in patch_lines(result["patch"], []):
        print(line, file=out)
    for name, run in (("original", o), ("patched", p)):
        error = run.get("error") or {}
        if run["status"] == "crashed":
            where = f" ({error['rank_label']})" if error.get("rank_label") else ""
            print(f"\n{name} run crashed{where}:", file=out)
            print((error.get("traceback") or run.get("stderr_tail") or error.get("message", "")).rstrip(), file=out)
            if error.get("hint"):
                print(f"hint: {error['hint']}", file=out)
        elif run["status"] == "error":
            print(f"\n{name} run could not start: {error.get('message', '')}", file=out)
            if error.get("hint"):
                print(error["hint"], file=out)
            elif run.get("stderr_tail"):
                print(run["stderr_tail"].rstrip(), file=out)
    print(file=out)
    checks_o = [Check(**c) for c in o["checks"]]
    checks_p = [Check(**c) for c in p["checks"]]
    print(table(checks_o, checks_p, color=color), file=out)
    for name, run in (("original", o), ("patched", p)):
        if run.get("rank_table"):
            print(f"\nranks side by side, {name} run (the checks where they differ; all ranks agree on the others):",
                  file=out)
            for line in run["rank_table"]:
                print(line, file=out)
    print(file=out)
    for line in result["verdict"]["lines"]:
        print(line, file=out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gradlint verify")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
