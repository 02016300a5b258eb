"""`gradlint verify` on real distributed training scripts, two processes on CPU with gloo.

    python benchmarks/verify_ddp_scripts.py [--repos DIR] [--steps 30] [--only nanoGPT] [--text]

The same machinery as `verify_real_scripts.py` (snapshots from `--repos DIR` or `$GRADLINT_REPOS_DIR`,
copied to a temporary folder, generated data, the test shims of `benchmarks/shims` first on PYTHONPATH; the
scripts are never edited): karpathy/nanoGPT's `train.py` under `--nproc-per-node 2` (its DDP path, with
`--backend=gloo`), and pytorch/examples' DDP tutorial, `multigpu_torchrun.py` under `--nproc-per-node 2`
and `multigpu.py`, which starts its own workers with `mp.spawn` (verified as it is run, then with
`--nproc-per-node 2`, which verify must refuse with an explanation). The tutorial scripts assume CUDA and
NCCL: the shims' GRADLINT_SHIM_CPU_ONLY keeps them on the CPU with gloo (see `benchmarks/shims/README.md`).

Prints one row per case (the verdict, the exit code, the ranks, what fails or warns, and whether the verdict
is the one the case must get); `--text` also prints each case's report as the terminal shows it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.verify_real_scripts import SHIMS, Case, _judge, _row, run_case, shakespeare_char  # noqa: E402

TUTORIAL = "distributed/ddp-tutorial-series"
NANOGPT_ARGS = ["config/train_shakespeare_char.py", "--backend=gloo", "--compile=False", "--dtype=float32",
                "--eval_iters=2", "--eval_interval=1000", "--log_interval=10", "--block_size=32", "--batch_size=4",
                "--n_layer=2", "--n_head=2", "--n_embd=32", "--dropout=0.0", "--gradient_accumulation_steps=2",
                "--max_iters=1000", "--lr_decay_iters=1000", "--warmup_iters=10"]
CPU = {"GRADLINT_SHIM_CPU_ONLY": "1"}

CASES = [
    Case("nanoGPT DDP", "karpathy+nanoGPT", ".", ".", ["train.py"], NANOGPT_ARGS, "healthy",
         "GPT under torchrun, 2 ranks, gradient accumulation with require_backward_grad_sync", shakespeare_char,
         verify=["--nproc-per-node", "2"], env=CPU),
    Case("ddp multigpu_torchrun", "pytorch+examples", TUTORIAL, ".", ["multigpu_torchrun.py"],
         ["2", "1", "--batch_size", "32"], "gradient_flow",
         "cross_entropy on a (B, 1) output: the loss is 0 and every gradient 0 on every rank",
         verify=["--nproc-per-node", "2"], env=CPU),
    Case("ddp multigpu (mp.spawn)", "pytorch+examples", TUTORIAL, ".", ["multigpu.py"],
         ["2", "1", "--batch_size", "32"], "gradient_flow",
         "its own mp.spawn workers, hooked and stopped; the same all-zero gradients",
         env=dict(CPU, GRADLINT_SHIM_CPU_DEVICES="2")),
    Case("ddp multigpu --nproc-per-node 2", "pytorch+examples", TUTORIAL, ".", ["multigpu.py"],
         ["2", "1", "--batch_size", "32"], "refused",
         "a script that spawns its own workers, launched under torchrun by mistake: said, not run",
         verify=["--nproc-per-node", "2"], env=dict(CPU, GRADLINT_SHIM_CPU_DEVICES="2")),
]


def _text(case: Case, repos: Path, steps: int, work: Path) -> str:
    """The terminal report of the case (a second run, in a folder of its own)."""
    folder = work / (case.name.replace(" ", "_") + "-text")
    shutil.copytree(repos / case.repo / case.copy, folder, ignore=shutil.ignore_patterns(".git", "*.ipynb", "assets"))
    if case.data is not None:
        case.data(folder / case.cwd)
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1", COLUMNS="150", **case.env)
    env["PYTHONPATH"] = os.pathsep.join([str(SHIMS / "site")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    gradlint = Path(sys.executable).with_name("gradlint")
    cmd = [str(gradlint), "verify", *case.target, "--steps", str(case.steps or steps), *case.verify, "--", *case.args]
    proc = subprocess.run(cmd, cwd=folder / case.cwd, env=env, capture_output=True, text=True, timeout=1800)
    return f"$ gradlint verify {' '.join(cmd[2:])}\n{proc.stdout}{proc.stderr}(exit {proc.returncode})\n"


def _refused(outcome: dict) -> tuple[bool, str]:
    result = outcome.get("result") or {}
    error = (result.get("original") or {}).get("error") or {}
    ok = outcome["exit"] == 2 and "starts its own workers" in error.get("message", "")
    return ok, error.get("message", outcome.get("error", ""))[:160]


def _ranks(outcome: dict) -> str:
    result = outcome.get("result") or {}
    run = result.get("patched") if (result.get("patched") or {}).get("status") != "skipped" else result.get("original")
    ranks = (run or {}).get("ranks") or []
    return ", ".join(f"{r['label']} {r['status']} {r['steps']}" for r in ranks) or "-"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repos", default=os.environ.get("GRADLINT_REPOS_DIR"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--only", help="comma-separated case names (prefixes)")
    p.add_argument("--text", action="store_true", help="also print each case's terminal report")
    args = p.parse_args()
    if not args.repos or not Path(args.repos).is_dir():
        print("no repository snapshots: pass --repos DIR or set GRADLINT_REPOS_DIR; nothing to run")
        return 0
    repos = Path(args.repos)
    work = Path(tempfile.mkdtemp(prefix="gradlint-ddp-"))
    rows = [["script", "verdict", "exit", "ranks", "checks that fail or warn; notes", "verdict right"]]
    texts = []
    try:
        for case in CASES:
            if args.only and not any(case.name.startswith(o) for o in args.only.split(",")):
                continue
            if not (repos / case.repo / case.copy).exists():
                print(f"skipped: {case.name}: no {case.repo} snapshot")
                continue
            print(f"running {case.name} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            outcome = run_case(case, repos, args.steps, work)
            if case.expect == "refused":
                ok, why = _refused(outcome)
                rows.append([case.name, "refused" if ok else "?", str(outcome["exit"]), "-", why,
                             "yes" if ok else "NO"])
            elif "error" in outcome:
                rows.append(_row(outcome))
            else:
                row = _row(outcome)
                row[3] = _ranks(outcome)
                ok, why = _judge(case, outcome["result"], outcome["exit"])
                row[-1] = "yes" if ok else f"NO: {why}"
                rows.append(row)
            print(f"  {time.perf_counter() - start:.0f}s", file=sys.stderr)
            if args.text:
                texts.append(_text(case, repos, args.steps, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        print(" | ".join(r))
    for text in texts:
        print("\n" + text)
    return 0 if all(r[-1] == "yes" for r in rows[1:]) else 1


if __name__ == "__main__":
    sys.exit(main())
