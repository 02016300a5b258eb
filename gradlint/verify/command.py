"""`gradlint verify PATH`: run the training code as it is and with gradlint's safe fixes, and compare.

Torch-free on purpose: torch is imported only by the child processes (`harness`), so `--help` works
without it and a missing torch gets one clear line. The user's files are only read: both runs execute
from copies in a temporary folder, and `--keep DIR` saves the patched one.

Exit status: 0 the patched run is healthy, 1 it is not, 2 no verdict (bad input, a crash or hang that
the patch does not remove, torch missing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from .checks import evaluate, healthy, relative
from .patch import PatchResult, copy_project, fix_tree
from .report import patch_lines, table, verdict
from .runner import Progress, RunSpec, run_harness

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_ERROR = 0, 1, 2
SCRIPT_NAMES = ("train.py", "main.py")
RAN = ("stopped", "finished")


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, not {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run a training script (or a folder's train.py) for N optimizer steps under cheap "
                          "health checks, then again with gradlint's safe fixes applied to a copy, and show "
                          "both side by side. The user's files are never modified.")
    parser.add_argument("path", metavar="PATH", help="a training script, or a folder with train.py or main.py")
    parser.add_argument("--steps", type=int, default=30, metavar="N", help="optimizer steps per run (default: 30)")
    parser.add_argument("--device", type=_device, default="auto", metavar="cpu|cuda|auto",
                        help="passed to a script that has a --device argument (default: auto, CUDA if present)")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="seed for torch/random/numpy, and for a script's --seed argument (default: 0, the "
                             "script's own default for its argument)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="S",
                        help="seconds per run before it is killed (default: 300)")
    parser.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--keep", metavar="DIR", help="save the patched copy of the project in DIR")
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
    parser.usage = ("%(prog)s PATH [--steps N] [--device cpu|cuda|auto] [--timeout S] [--report FILE.html] "
                    "[--json] [--keep DIR] [options] [-- ARGS]")
    parser.epilog = "Arguments after `--` are the script's own: gradlint verify train.py --steps 20 -- --lr 0.1"
    parser.set_defaults(script_args=[])
    _split_at_double_dash(parser)


def _split_at_double_dash(parser: argparse.ArgumentParser) -> None:
    """Everything after the first `--` is the script's, whatever it looks like. argparse cannot say so with a
    positional after PATH and options in between (it assigns an empty list to the first run of positionals),
    so the subparser splits its arguments before parsing them."""
    original = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        script_args: list[str] = []
        if "--" in args:
            at = args.index("--")
            args, script_args = args[:at], args[at + 1:]
        namespace, extras = original(args, namespace)
        namespace.script_args = script_args
        return namespace, extras

    parser.parse_known_args = parse_known_args


def _find_script(path: Path) -> Optional[Path]:
    if path.is_dir():
        return next((path / n for n in SCRIPT_NAMES if (path / n).is_file()), None)
    return path if path.is_file() else None


def _remap(value, replacements: list[tuple[str, str]]):
    """Paths of the temporary copies back to the user's paths, everywhere in a record."""
    if isinstance(value, str):
        for old, new in replacements:
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [_remap(v, replacements) for v in value]
    if isinstance(value, dict):
        return {k: _remap(v, replacements) for k, v in value.items()}
    return value


class _Session:
    def __init__(self, args: argparse.Namespace, script: Path, work: Path, progress: Progress):
        self.args, self.script, self.work, self.progress = args, script, work, progress
        self.script_args = list(args.script_args or [])
        if self.script_args[:1] == ["--"]:
            self.script_args = self.script_args[1:]
        self.thresholds = {"vanishing": args.vanishing, "exploding": args.exploding, "window": args.window}

    def run(self, label: str, root: Path, trace_step: Optional[int] = None, steps: Optional[int] = None) -> dict:
        script = root / self.script.name
        spec = RunSpec(label=label, script=script, cwd=root, args=self.script_args,
                       steps=steps or self.args.steps, device=self.args.device, seed=self.args.seed,
                       timeout=self.args.timeout, thresholds=self.thresholds, trace_step=trace_step)
        record = run_harness(spec, self.work / "runs", self.progress)
        self.progress.done(label, _short_status(record), record.get("wall_seconds", 0.0))
        return record

    def run_and_pinpoint(self, label: str, root: Path) -> dict:
        record = self.run(label, root)
        first = record.get("first_nonfinite")
        if first is None or self.args.no_pinpoint or record.get("status") not in RAN + ("crashed",):
            return record
        step = first["step"]
        replay = self.run(f"{label} replay", root, trace_step=step, steps=step)
        record["trace"] = replay.get("trace")
        if record["trace"] is None:
            record["replay_status"] = (f"the replay of step {step} did not find it (status {replay.get('status')}); "
                                       "is the script deterministic for a fixed seed?")
        elif not _same_prefix(record, replay, step):
            record["replay_status"] = "the replay's earlier steps differed from the run's (non-deterministic ops?)"
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
        return f"{record.get('steps', 0)} steps{extra}"
    if status == "crashed" and record.get("trace"):
        return "crashed, pinpointed"
    return status or "error"


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    path = Path(args.path)
    if not path.exists():
        print(f"gradlint verify: error: {args.path}: no such file or directory", file=sys.stderr)
        return EXIT_ERROR
    script = _find_script(path)
    if script is None:
        print(f"gradlint verify: error: {args.path}: no {' or '.join(SCRIPT_NAMES)} in this folder; "
              "pass the training script itself", file=sys.stderr)
        return EXIT_ERROR
    if importlib.util.find_spec("torch") is None:
        print("gradlint verify: error: torch is not installed; verify runs the training code and needs it: "
              "pip install 'gradlint[verify]'", file=sys.stderr)
        return EXIT_ERROR
    if args.steps < 1:
        print("gradlint verify: error: --steps must be at least 1", file=sys.stderr)
        return EXIT_ERROR
    keep = Path(args.keep) if args.keep else None
    if keep is not None and keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        print(f"gradlint verify: error: --keep {keep}: exists and is not an empty folder", file=sys.stderr)
        return EXIT_ERROR

    script = script.resolve()
    project = script.parent
    shown_root = relative(str(project))
    work = Path(tempfile.mkdtemp(prefix="gradlint-verify-"))
    progress = Progress(sys.stderr, enabled=not args.json or sys.stderr.isatty())
    try:
        original_root = copy_project(project, work / "original" / project.name)
        patched_root = copy_project(project, work / "patched" / project.name)
        patch = fix_tree(patched_root, "" if shown_root == "." else shown_root, unsafe=args.unsafe_fixes)
        session = _Session(args, script, work, progress)
        prefix = "" if shown_root == "." else shown_root.rstrip("/") + "/"
        original = session.run_and_pinpoint("original", original_root)
        original = _remap(original, [(str(original_root) + os.sep, prefix), (str(original_root), shown_root)])
        patched = None
        if _run_patched(original, patch):
            patched = session.run_and_pinpoint("patched", patched_root)
            patched = _remap(patched, [(str(patched_root) + os.sep, prefix), (str(patched_root), shown_root)])
        if keep is not None:
            shutil.copytree(patched_root, keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if patched is None:
        reason = ("the original run did not get to train" if original.get("status") not in ("crashed",)
                  else "the original run crashed and no fix applies")
        patched = {"status": "skipped", "reason": f"not run: {reason}"}
    result = _compare(args, script, shown_root, patch, original, patched)
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


def _series(record: dict) -> dict:
    rows = record.get("rows") or []
    return {"step": [r["step"] for r in rows], "loss": [r.get("loss") for r in rows],
            "total_norm": [r.get("total") for r in rows],
            "clip_before": [(r.get("clips") or [{}])[0].get("before") for r in rows],
            "skipped": [bool(r.get("skipped")) for r in rows]}


def _compare(args, script: Path, shown_root: str, patch: PatchResult, original: dict, patched: dict) -> dict:
    checks_o, checks_p = evaluate(original), evaluate(patched)
    patched_healthy = healthy(checks_p)
    code = _exit_code(original, patched, patched_healthy)
    runs = {}
    for name, record, checks in (("original", original, checks_o), ("patched", patched, checks_p)):
        runs[name] = {
            "status": record.get("status"), "steps": record.get("steps", 0), "device": record.get("device"),
            "seconds": record.get("seconds"), "error": record.get("error"),
            "first_nonfinite": record.get("first_nonfinite"), "trace": record.get("trace"),
            "checks": [c.to_dict() for c in checks], "healthy": healthy(checks), "series": _series(record),
            "layers": record.get("layers") or [],
            "layer_norms": [r.get("norms") for r in record.get("rows") or []],
            "stdout_tail": record.get("stdout_tail", ""), "stderr_tail": record.get("stderr_tail", ""),
        }
    return {
        "path": args.path, "script": relative(str(script)), "project": shown_root, "steps": args.steps,
        "device": original.get("device") or args.device, "torch": original.get("torch"),
        "seed": args.seed, "thresholds": original.get("thresholds"),
        "patch": patch.to_dict(), "original": runs["original"], "patched": runs["patched"],
        "healthy": patched_healthy and code == EXIT_HEALTHY, "exit_code": code,
        "verdict": verdict(checks_o, checks_p, patched_healthy, code, _no_verdict_reason(original, patched)),
    }


def _no_verdict_reason(original: dict, patched: dict) -> str:
    runs = [("original", original), ("patched", patched)]
    if patched.get("status") == "skipped" and original.get("status") == "crashed":
        return patched.get("reason", "the patched run did not start")
    for name, record in runs:
        status = record.get("status")
        if status == "no_steps":
            return f"the {name} run never called optimizer.step()"
        if status in ("timeout", "crashed", "error"):
            error = record.get("error") or {}
            return f"the {name} run {'timed out' if status == 'timeout' else status}: {error.get('message', '')}".rstrip(": ")
    return ""


def _print_text(result: dict, out, color: bool) -> None:
    from .checks import Check

    o, p = result["original"], result["patched"]
    print(f"gradlint verify {result['path']}  ({result['device']}, {result['steps']} steps, "
          f"torch {result.get('torch') or '?'})", file=out)
    for line in patch_lines(result["patch"], []):
        print(line, file=out)
    for name, run in (("original", o), ("patched", p)):
        error = run.get("error") or {}
        if run["status"] == "crashed":
            print(f"\n{name} run crashed:", file=out)
            print((error.get("traceback") or run.get("stderr_tail") or error.get("message", "")).rstrip(), file=out)
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
    print(file=out)
    for line in result["verdict"]:
        print(line, file=out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gradlint verify")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
