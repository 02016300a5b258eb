"""`gradlint verify` on real training scripts nobody here wrote, with tiny configs and generated data.

    python benchmarks/verify_real_scripts.py [--repos DIR] [--steps 30] [--only mnist,dcgan] [--keep-work]
                                             [--reports DIR]

The scripts come from source snapshots (GitHub is not reachable from CI): `--repos DIR` or
`$GRADLINT_REPOS_DIR`, a folder holding `pytorch+examples/`, `karpathy+nanoGPT/`, `karpathy+minGPT/`,
`Lightning-AI+pytorch-lightning/`, `huggingface+accelerate/`; a case whose snapshot (or package: lightning,
transformers, accelerate) is absent is skipped. Each case copies what it needs to a temporary folder (the
snapshots stay read-only), generates its data there (no downloads), and runs
`gradlint verify --json` in it as a user would, with `benchmarks/shims` first on PYTHONPATH: stand-ins for
torchvision, matplotlib, HF datasets/evaluate and `from_pretrained`, clearly marked as test shims (see
its README). The scripts themselves are never edited.

Prints one row per case: the verdict, the exit code, the steps and series, each failing or warning check, and
for the accelerate example the time from the original run's end to the patched run's start. Each case
also states what its verdict must be (the defect the issue observed, or health), and the table says
whether it was; a reassuring verdict on a broken run is the failure this benchmark exists to catch.
`--reports DIR` also writes each case's HTML report there (`DIR/<case>.html`), to be looked at.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIMS = ROOT / "benchmarks" / "shims"


def _words(n: int, vocab: int = 300, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    # Zipf-like word frequencies, sentences of 5-20 words: text a language model can learn a little from.
    ranks = np.minimum(rng.zipf(1.3, size=n), vocab) - 1
    return [f"w{r}" for r in ranks]


def _text(n_words: int, seed: int = 0) -> str:
    words, lines, at = _words(n_words, seed=seed), [], 0
    rng = np.random.default_rng(seed + 1)
    while at < len(words):
        k = int(rng.integers(5, 20))
        lines.append(" ".join(words[at:at + k]))
        at += k
    return "\n".join(lines) + "\n"


# -- the data each case needs, generated in its folder ---------------------------------------------------

def wikitext(folder: Path) -> None:
    data = folder / "data" / "wikitext-2"
    data.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train.txt", 40000, 0), ("valid.txt", 4000, 1), ("test.txt", 4000, 2)):
        (data / name).write_text(_text(n, seed))


def sine_waves(folder: Path) -> None:
    import torch

    rng = np.random.default_rng(2)
    t, length, n = 20, 200, 12  # generate_sine_wave.py's recipe, smaller (100 waves of 1000 there)
    x = np.arange(length)[None, :] + rng.integers(-4 * t, 4 * t, n)[:, None]
    torch.save(np.sin(x / 1.0 / t).astype("float64"), folder / "traindata.pt")


def shakespeare_char(folder: Path) -> None:
    data = folder / "data" / "shakespeare_char"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    vocab = 65
    for name, n in (("train.bin", 50000), ("val.bin", 5000)):
        tokens = np.minimum(rng.zipf(1.5, size=n), vocab) - 1
        tokens.astype(np.uint16).tofile(data / name)
    with open(data / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": vocab}, f)


def char_text(folder: Path) -> None:
    rng = np.random.default_rng(4)
    letters = list("abcdefghijklmnopqrstuvwxyz") * 3 + list("OGd,! ") * 4
    chunks = ["O God, O God! "] + ["".join(rng.choice(letters, size=60)) + "\n" for _ in range(800)]
    (folder / "input.txt").write_text("".join(chunks))


def lightning_wikitext(folder: Path) -> None:
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "wikitext-2.txt").write_text(_text(160000, seed=3))


# -- the cases ------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    repo: str  # folder under the repos dir
    copy: str  # what to copy (a folder of the repo)
    cwd: str  # where to run, inside the copy
    target: list  # PATH or -m MODULE, relative to cwd
    args: list  # the script's own
    expect: str  # "healthy", or the check keys that must fail ("loss", "gradient_flow")
    why: str
    data: Optional[Callable[[Path], None]] = None
    verify: list = field(default_factory=list)  # extra verify options
    env: dict = field(default_factory=dict)
    pythonpath: list = field(default_factory=list)  # inside the copy
    needs: tuple = ()  # importable packages
    steps: Optional[int] = None
    shims: tuple = ()  # folders of benchmarks/shims besides `site`: vision, plots, hf


CASES = [
    Case("mnist", "pytorch+examples", "mnist", ".", ["main.py"],
         ["--batch-size", "16", "--test-batch-size", "64", "--epochs", "1", "--no-accel"], "healthy",
         "a small CNN with Adadelta: trains", shims=("vision",)),
    Case("dcgan", "pytorch+examples", "dcgan", ".", ["main.py"],
         ["--dataset", "fake", "--batchSize", "8", "--ngf", "8", "--ndf", "8", "--nz", "16", "--workers", "0",
          "--niter", "1", "--manualSeed", "1"], "healthy", "a GAN, two optimizers (netD, netG)", shims=("vision",)),
    Case("word_language_model", "pytorch+examples", "word_language_model", ".", ["main.py"],
         ["--emsize", "32", "--nhid", "32", "--bptt", "16", "--batch_size", "8", "--epochs", "1",
          "--log-interval", "10"], "healthy",
         "an LSTM updated by hand (p.data.add_), no optimizer.step()", wikitext),
    Case("word_language_model --use-optimizer", "pytorch+examples", "word_language_model", ".", ["main.py"],
         ["--emsize", "32", "--nhid", "32", "--bptt", "16", "--batch_size", "8", "--epochs", "1",
          "--log-interval", "10", "--use-optimizer"], "loss",
         "AdamW at the hand-update's lr (20): the loss diverges", wikitext),
    Case("time_sequence_prediction", "pytorch+examples", "time_sequence_prediction", ".", ["train.py"],
         ["--steps", "15"], "healthy", "LSTM cells trained with LBFGS closures", sine_waves, steps=5,
         env={"GRADLINT_SHIM_PICKLED_DATA": "1"}, shims=("plots",)),
    Case("ddp single_gpu", "pytorch+examples", "distributed/ddp-tutorial-series", ".", ["single_gpu.py"],
         ["2", "1", "--batch_size", "32"], "gradient_flow",
         "cross_entropy on a (B, 1) output: the loss is 0 and every gradient 0",
         env={"GRADLINT_SHIM_CPU_ONLY": "1"}),
    Case("nanoGPT", "karpathy+nanoGPT", ".", ".", ["train.py"],
         ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--dtype=float32",
          "--eval_iters=2", "--eval_interval=1000", "--log_interval=10", "--block_size=32", "--batch_size=4",
          "--n_layer=2", "--n_head=2", "--n_embd=32", "--dropout=0.0", "--gradient_accumulation_steps=2",
          "--max_iters=1000", "--lr_decay_iters=1000", "--warmup_iters=10"], "healthy",
         "GPT with gradient accumulation; its config has no --device flag", shakespeare_char,
         verify=["--device", "cpu"]),
    Case("minGPT chargpt", "karpathy+minGPT", ".", "projects/chargpt", ["chargpt.py"],
         ["--trainer.max_iters=200", "--trainer.batch_size=8", "--trainer.num_workers=0", "--trainer.device=cpu",
          "--model.model_type=None", "--model.n_layer=2", "--model.n_head=2", "--model.n_embd=32",
          "--data.block_size=32"], "healthy", "minGPT imported from outside the script's folder", char_text,
         pythonpath=["."]),
    Case("lightning transformer", "Lightning-AI+pytorch-lightning", "examples/pytorch/basics", ".",
         ["transformer.py"], [], "healthy", "Lightning Trainer, gradient_clip_val, closure steps",
         lightning_wikitext, needs=("lightning",)),
    Case("accelerate nlp_example", "huggingface+accelerate", "examples", ".", ["nlp_example.py"], ["--cpu"],
         "healthy", "accelerate on CPU, a tiny BERT; run from the examples folder (38 files)",
         needs=("transformers", "accelerate"), verify=["--unsafe-fixes"], shims=("hf",)),
]


def run_case(case: Case, repos: Path, steps: int, work: Path, reports: Optional[Path] = None) -> dict:
    source = repos / case.repo / case.copy
    folder = work / case.name.replace(" ", "_")
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".git", "*.ipynb", "assets"))
    cwd = folder / case.cwd
    if case.data is not None:
        case.data(cwd)
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1", **case.env)
    paths = [str(SHIMS / s) for s in ("site", *case.shims)] + [str(folder / p) for p in case.pythonpath]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    gradlint = Path(sys.executable).with_name("gradlint")
    report = ["--report", str(reports / f"{case.name.replace(' ', '_')}.html")] if reports else []
    cmd = [str(gradlint), "verify", *case.target, "--steps", str(case.steps or steps), "--json", *case.verify,
           *report, "--", *case.args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        return {"case": case, "error": (proc.stderr or proc.stdout)[-2000:], "exit": proc.returncode,
                "seconds": seconds}
    return {"case": case, "result": result, "exit": proc.returncode, "seconds": seconds}


def _judge(case: Case, result: dict, code: int) -> tuple[bool, str]:
    """Did the verdict say what the run is? "healthy": exit 0; otherwise the named checks must fail (exit 1)."""
    decisive = result["patched"] if result["patched"]["status"] != "skipped" else result["original"]
    failing = {c["key"] for c in decisive["checks"] if c["status"] == "fail"}
    if case.expect == "healthy":
        return code == 0, "healthy" if code == 0 else f"expected healthy, got {sorted(failing)} (exit {code})"
    expected = set(case.expect.split(","))
    ok = code == 1 and expected <= failing and not result["verdict"]["fixed"]
    return ok, (f"fails {', '.join(sorted(expected))} as it must" if ok
                else f"expected a FAIL of {sorted(expected)}, got exit {code}, failing {sorted(failing)}")


def _row(outcome: dict) -> list[str]:
    case = outcome["case"]
    if "error" in outcome:
        return [case.name, "ERROR", str(outcome["exit"]), "-", outcome["error"].strip().splitlines()[-1][:80], "NO"]
    result, code = outcome["result"], outcome["exit"]
    decisive = result["patched"] if result["patched"]["status"] != "skipped" else result["original"]
    run = next(c for c in decisive["checks"] if c["key"] == "run")
    flagged = [f"{c['status'].upper()} {c['title']}" for c in decisive["checks"]
               if c["status"] in ("fail", "warn") and c["key"] != "run"]
    ok, why = _judge(case, result, code)
    verdict = result["verdict"]["lines"][-1].replace("verdict: ", "")
    gap = result.get("timing", {}).get("patched_start_after_original_end")
    notes = [*(result["verdict"]["notes"]), *(["fixed: " + ", ".join(result["verdict"]["fixed"])]
                                              if result["verdict"]["fixed"] else [])]
    if result["device"].get("note"):
        notes.append(result["device"]["note"])
    if gap is not None:
        notes.append(f"patched run started {gap:.2f}s after the original ended")
    return [case.name, verdict, str(code), run["summary"], "; ".join(flagged + notes) or "-",
            "yes" if ok else f"NO: {why}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repos", default=os.environ.get("GRADLINT_REPOS_DIR"),
                   help="folder of repository snapshots (default: $GRADLINT_REPOS_DIR)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--only", help="comma-separated case names (prefixes)")
    p.add_argument("--keep-work", action="store_true", help="keep the temporary folders")
    p.add_argument("--json", metavar="FILE", help="also write every verify result to FILE")
    p.add_argument("--reports", metavar="DIR", help="also write each case's HTML report in DIR")
    args = p.parse_args()
    if not args.repos or not Path(args.repos).is_dir():
        print("no repository snapshots: pass --repos DIR or set GRADLINT_REPOS_DIR; nothing to run")
        return 0
    repos = Path(args.repos)
    work = Path(tempfile.mkdtemp(prefix="gradlint-real-"))
    outcomes, skipped = [], []
    try:
        for case in CASES:
            if args.only and not any(case.name.startswith(o) for o in args.only.split(",")):
                continue
            if not (repos / case.repo / case.copy).exists():
                skipped.append(f"{case.name}: no {case.repo} snapshot")
                continue
            missing = [n for n in case.needs if importlib.util.find_spec(n) is None]
            if missing:
                skipped.append(f"{case.name}: {', '.join(missing)} not installed")
                continue
            print(f"running {case.name} ...", file=sys.stderr, flush=True)
            reports = Path(args.reports).resolve() if args.reports else None
            if reports is not None:
                reports.mkdir(parents=True, exist_ok=True)
            outcomes.append(run_case(case, repos, args.steps, work, reports))
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folders kept in {work}", file=sys.stderr)
    rows = [["script", "verdict", "exit", "run", "checks that fail or warn; notes", "verdict right"]]
    rows += [_row(o) for o in outcomes]
    for r in rows:
        print(" | ".join(r))
    for s in skipped:
        print(f"skipped: {s}")
    if args.json:
        Path(args.json).write_text(json.dumps([{"case": o["case"].name, "exit": o["exit"], "seconds": o["seconds"],
                                                "result": o.get("result"), "error": o.get("error")}
                                               for o in outcomes], indent=1))
    return 0 if all(r[-1] == "yes" for r in rows[1:]) else 1


if __name__ == "__main__":
    sys.exit(main())
