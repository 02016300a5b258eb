"""gradlint against TorchFix, Fixit and ruff on real packages: a table of whole-process timings and ratios.

    python benchmarks/bench.py            # open_clip, timm, transformers; 3 runs; the whole fix round-trip
    python benchmarks/bench.py --quick    # timm, one run, cached peer timings only, no round-trip

Each tool runs as a whole process (interpreter start, imports, discovery, output) from a cwd outside the
repository, the runs of the tools interleaved so that load from elsewhere on the machine spreads over
all of them. Reported: min and median wall seconds, files/s (from the min), and peak memory two ways
(see `measure.py`): the largest single process (parent or any worker, from wait4's rusage) and the
peak sum over the process tree (sampled from /proc). Nothing here asserts on a time: it prints.

TorchFix and Fixit take minutes per corpus: each is run once and its timing cached in
`~/.cache/gradlint/bench-venvs/peer-timings.json`, reused (and said so) until `--refresh-peers`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # `python benchmarks/bench.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import peers as peers_mod  # noqa: E402
from benchmarks.corpus import CORPORA, corpus_dir  # noqa: E402
from benchmarks.measure import Measurement, Series, run_measured  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_CORPORA = ("open_clip", "timm", "transformers")
QUICK_CORPUS = "timm"
SLOW_PEER_CORPORA = ("open_clip", "timm")  # TorchFix and Fixit on transformers: est. > 1 000 s each

# (what, corpus, comparison, bound): gradlint's time / the peer's (or memory) must be <= bound.
TARGETS = [
    ("cold >= 30x faster than TorchFix", "timm", ("gradlint cold", "torchfix"), 1 / 30),
    ("cold >= 30x faster than Fixit", "timm", ("gradlint cold", "fixit"), 1 / 30),
    ("cold within 3x of ruff --no-cache", "timm", ("gradlint cold", "ruff cold"), 3.0),
    ("cold within 3x of ruff --no-cache", "transformers", ("gradlint cold", "ruff cold"), 3.0),
    ("warm within 2x of ruff warm", "timm", ("gradlint warm", "ruff warm"), 2.0),
    ("warm within 2x of ruff warm", "transformers", ("gradlint warm", "ruff warm"), 2.0),
    ("peak memory <= ruff's (PSS summed over the process tree)", "transformers", ("gradlint cold", "ruff cold"),
     1.0),
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def gradlint_command() -> list[str]:
    script = Path(sys.executable).parent / "gradlint"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gradlint"]


def files_in(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: dict[str, dict[str, Series]] = {}  # corpus -> tool label -> series
        self.notes: dict[str, dict[str, str]] = {}
        self.files: dict[str, int] = {}
        self.findings: dict[str, Counter] = {}

    def record(self, corpus: str, tool: str, measurement: Measurement, note: str = "") -> None:
        self.results.setdefault(corpus, {}).setdefault(tool, Series()).runs.append(measurement)
        if measurement.returncode not in (0, 1):
            note = f"{note} rc={measurement.returncode}: {measurement.stderr_tail[-300:]!r}".strip()
        if note:
            self.notes.setdefault(corpus, {})[tool] = note

    # -- one corpus -------------------------------------------------------------------------------
    def run_corpus(self, corpus: str) -> None:
        args = self.args
        path = corpus_dir(corpus)
        self.files[corpus] = len(files_in(path))
        log(f"== {corpus}: {self.files[corpus]} files")
        gl = gradlint_command()
        gl_work = fresh(peers_mod.workdir("gradlint") / corpus)
        out = gl_work / "findings.json"
        # Timed with the default (text) output, like ruff's; the findings per rule come from one untimed JSON run.
        gl_check = [*gl, "check", str(path), "--select", "ALL", "--exit-zero"]
        ruff = None
        if "ruff" in args.peers:
            ruff_venv = peers_mod.ensure_venv(peers_mod.PEERS["ruff"], log)
            ruff_work = fresh(peers_mod.workdir("ruff") / corpus)
            ruff = peers_mod.PEERS["ruff"].command(ruff_venv, path)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")

        for rep in range(args.runs):  # cold, interleaved
            log(f"   cold run {rep + 1}/{args.runs}")
            self.record(corpus, "gradlint cold", run_measured([*gl_check, "--no-cache"], gl_work, env, out))
            if ruff:
                self.record(corpus, "ruff cold", run_measured([*ruff, "--no-cache"], ruff_work, env,
                                                              ruff_work / "out.txt"))
        run_measured([*gl_check, "--no-cache", "--output-format", "json"], gl_work, env, out)
        self.findings[corpus] = Counter(f["code"] for f in json.loads(out.read_text() or "[]"))

        # warm: one run fills each cache, then nothing changes
        cache_dir = gl_work / ".gradlint_cache"
        run_measured(gl_check, gl_work, env, out)
        if ruff:
            ruff_warm = [*ruff, "--cache-dir", str(ruff_work / ".ruff_cache")]
            run_measured(ruff_warm, ruff_work, env, ruff_work / "out.txt")
        for rep in range(args.runs):
            log(f"   warm run {rep + 1}/{args.runs}")
            self.record(corpus, "gradlint warm", self.warm_gradlint(gl_check, gl_work, env, out, cache_dir, corpus))
            if ruff:
                self.record(corpus, "ruff warm", run_measured(ruff_warm, ruff_work, env, ruff_work / "out.txt"))

        for name in ("torchfix", "fixit"):
            if name in args.peers:
                self.run_slow_peer(name, corpus, path, env)

        if args.floor and (corpus in args.floor_corpora or args.quick):
            log("   LibCST parse floor")
            self.record(corpus, "LibCST parse floor", run_measured(
                [sys.executable, str(HERE / "parse_floor.py"), str(path)], gl_work, env), "1 process")

    def warm_gradlint(self, command, work, env, out, cache_dir, corpus) -> Measurement:
        """A warm run that really hit the cache: a hit writes nothing under .gradlint_cache/. A miss means
        gradlint's code changed under us (the cache key holds its modules' mtimes: someone edited a rule),
        so the cache is filled again and the run repeated."""
        def state():
            return sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(cache_dir))

        for _attempt in range(4):
            before = state()
            measurement = run_measured(command, work, env, out)
            if state() == before:
                return measurement
            log("   (warm run missed the cache: gradlint's code changed meanwhile; filling it again)")
            run_measured(command, work, env, out)
        self.notes.setdefault(corpus, {})["gradlint warm"] = "cache kept missing: gradlint's code changes"
        return measurement

    def run_slow_peer(self, name: str, corpus: str, path: Path, env: dict) -> None:
        peer = peers_mod.PEERS[name]
        key = peers_mod.timing_key(peer, corpus, CORPORA[corpus][1])
        cached = None if self.args.refresh_peers else peers_mod.load_cached(key)
        if cached is not None:
            for m in peers_mod.measurements_of(cached):
                self.record(corpus, name, m, f"reused: measured {cached['measured']} (--refresh-peers re-measures)")
            log(f"   {name}: reused cached timing from {cached['measured']}")
            return
        if corpus not in self.args.slow_peer_corpora or (self.args.quick and not self.args.refresh_peers):
            why = ("not cached; run without --quick" if self.args.quick
                   else "skipped: not in --slow-peer-corpora (est. > 1 000 s on transformers)")
            self.notes.setdefault(corpus, {})[name] = why
            return
        venv = peers_mod.ensure_venv(peer, log)
        work = fresh(peers_mod.workdir(name) / corpus)
        runs = []
        for rep in range(self.args.peer_runs):
            log(f"   {name} run {rep + 1}/{self.args.peer_runs} (minutes) ...")
            m = run_measured(peer.command(venv, path), work, env, work / "out.txt", timeout=self.args.peer_timeout)
            runs.append(m)
            self.record(corpus, name, m, "killed at --peer-timeout: a lower bound" if m.returncode == -9 else "")
        if all(m.returncode in (0, 1) for m in runs):
            peers_mod.store_cached(key, runs, self.files[corpus])

    # -- output -----------------------------------------------------------------------------------
    def table(self) -> str:
        lines = []
        header = (f"{'corpus':13} {'tool':20} {'runs':>4} {'min s':>8} {'median s':>9} {'CPU s':>7} {'files/s':>8} "
                  f"{'max-proc MB':>11} {'tree RSS':>8} {'tree PSS':>8}  note")
        lines.append(header)
        lines.append("-" * len(header))
        for corpus, tools in self.results.items():
            files = self.files[corpus]
            name = f"{corpus}"
            order = ["gradlint cold", "gradlint warm", "ruff cold", "ruff warm", "torchfix", "fixit",
                     "LibCST parse floor"]
            for tool in order:
                series = tools.get(tool)
                if series is None:
                    note = self.notes.get(corpus, {}).get(tool)
                    if note:
                        lines.append(f"{name:13} {tool:20} {'-':>4} {'-':>8} {'-':>9} {'-':>7} {'-':>8} {'-':>11} "
                                     f"{'-':>8} {'-':>8}  {note}")
                        name = ""
                    continue
                tree = " ".join(f"{v:8.0f}" if v else f"{'-':>8}" for v in (series.tree_rss_mb, series.tree_pss_mb))
                cpu = f"{series.cpu_min:7.2f}" if series.cpu_min is not None else f"{'-':>7}"
                lines.append(f"{name:13} {tool:20} {len(series.runs):4d} {series.min:8.2f} {series.median:9.2f} "
                             f"{cpu} {files / series.min:8.0f} {series.max_rss_mb:11.0f} {tree}  "
                             f"{self.notes.get(corpus, {}).get(tool, '')}")
                name = ""
            version = CORPORA[corpus][1]
            lines.append(f"{'':13} ({CORPORA[corpus][0]} {version}: {files} files)")
        return "\n".join(lines)

    def ratios(self) -> str:
        lines = ["gradlint's wall time / the other's (min; median in brackets; CPU time in braces); "
                 "below 1 is faster:"]
        for corpus, tools in self.results.items():
            for mine in ("gradlint cold", "gradlint warm"):
                if mine not in tools:
                    continue
                parts = []
                for other in ("ruff cold", "ruff warm", "torchfix", "fixit", "LibCST parse floor"):
                    if other in tools:
                        a, b = tools[mine], tools[other]
                        cpu = (f" {{{a.cpu_min / b.cpu_min:.3g}x}}" if a.cpu_min and b.cpu_min else "")
                        parts.append(f"{other} {a.min / b.min:.3g}x [{a.median / b.median:.3g}x]{cpu}")
                lines.append(f"  {corpus:13} {mine:14} vs " + ", ".join(parts))
        return "\n".join(lines)

    def targets(self) -> str:
        lines = ["Targets (ratios from min wall times of this run; cached peer timings say so in the table):"]
        for what, corpus, (mine, other), bound in TARGETS:
            tools = self.results.get(corpus, {})
            if mine not in tools or other not in tools:
                lines.append(f"  {'NOT MEASURED':12} {what} on {corpus}")
                continue
            if "memory" in what:
                a, b = tools[mine].tree_pss_mb, tools[other].tree_pss_mb
                if a is None or b is None:
                    a, b = tools[mine].max_rss_mb, tools[other].max_rss_mb
                ratio, shown = a / b, f"PSS summed over processes {a:.0f} MB vs {b:.0f} MB = {a / b:.2f}x"
                # and the other views, for the record
                shown += (f" (RSS summed: {tools[mine].tree_rss_mb or 0:.0f} vs {tools[other].tree_rss_mb or 0:.0f} MB;"
                          f" largest single process: {tools[mine].max_rss_mb:.0f} vs {tools[other].max_rss_mb:.0f} MB)")
            else:
                a, b = tools[mine].min, tools[other].min
                ratio = a / b
                shown = (f"{a:.2f} s vs {b:.2f} s = {b / a:.0f}x faster" if bound < 1
                         else f"{a:.2f} s vs {b:.2f} s = {ratio:.2f}x")
            if other in ("torchfix", "fixit") and tools[other].runs and tools[other].runs[0].returncode == -9:
                shown += " (peer killed at the timeout: its time is a lower bound)"
            verdict = "MET" if ratio <= bound else "MISSED"
            lines.append(f"  {verdict:12} {what} on {corpus}: {shown}")
        return "\n".join(lines)

    def findings_table(self) -> str:
        lines = ["gradlint findings per rule (--select ALL):"]
        for corpus, counts in self.findings.items():
            shown = ", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or "none"
            lines.append(f"  {corpus:13} {shown}")
        return "\n".join(lines)


def run_roundtrip(corpora) -> tuple[str, bool]:
    from benchmarks.roundtrip import fix_roundtrip, reduction_mismatches

    lines, ok = ["Fix round-trip (`fix --write --unsafe-fixes` on a copy) and region reduction vs full parse:"], True
    for corpus in corpora:
        root = corpus_dir(corpus)
        files = files_in(root)
        log(f"== round-trip {corpus} ({len(files)} files)")
        with tempfile.TemporaryDirectory(prefix="gradlint-roundtrip-") as tmp:
            rt = fix_roundtrip(files, root, Path(tmp))
        started = time.perf_counter()
        mismatches = reduction_mismatches(files, root, force=True)
        reduce_s = time.perf_counter() - started
        problems = rt.problems + mismatches
        ok = ok and not problems
        lines.append(f"  {corpus:13} {rt.files} files, {rt.findings} findings, {rt.fixable_findings} with fixes in "
                     f"{rt.files_with_fixes} files; {rt.changed_files} rewritten ({rt.exact_files} exactly the "
                     f"reported edits, {rt.contained_files} within them); {rt.seconds:.0f} s; reduction check "
                     f"(default and forced) {reduce_s:.0f} s: {'OK' if not problems else f'{len(problems)} PROBLEMS'}")
        lines.extend(f"      {p}" for p in problems[:30])
    return "\n".join(lines), ok


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"one corpus ({QUICK_CORPUS}), one run, cached TorchFix/Fixit timings only, no round-trip")
    parser.add_argument("--corpus", action="append", choices=sorted(CORPORA), help="corpora (repeatable)")
    parser.add_argument("--runs", type=int, help="runs per tool (default 3, --quick 1)")
    parser.add_argument("--peers", default="ruff,torchfix,fixit", help="comma-separated; '' for gradlint alone")
    parser.add_argument("--refresh-peers", action="store_true", help="re-measure TorchFix and Fixit")
    parser.add_argument("--peer-runs", type=int, default=1, help="runs of TorchFix and Fixit when measured")
    parser.add_argument("--peer-timeout", type=float, default=1200, help="kill a peer run after this many s")
    parser.add_argument("--slow-peer-corpora", default=",".join(SLOW_PEER_CORPORA),
                        help="corpora TorchFix and Fixit are measured on (cached timings are shown for any)")
    parser.add_argument("--no-floor", dest="floor", action="store_false", help="skip the LibCST parse floor")
    parser.add_argument("--floor-corpora", default="open_clip,timm,transformers")
    parser.add_argument("--no-roundtrip", dest="roundtrip", action="store_false")
    parser.add_argument("--roundtrip-corpora", default=",".join(CORPORA))
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    args.peers = [p for p in args.peers.split(",") if p]
    args.slow_peer_corpora = args.slow_peer_corpora.split(",")
    args.floor_corpora = args.floor_corpora.split(",")
    corpora = args.corpus or ([QUICK_CORPUS] if args.quick else list(DEFAULT_CORPORA))
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.quick:
        args.floor = False
        args.roundtrip = False

    bench = Bench(args)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    for corpus in corpora:
        bench.run_corpus(corpus)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\ngradlint benchmark: {cpus} CPUs, Python {sys.version.split()[0]}, load average at start {load:.2f}"
          f"{' (other work on the machine: expect noise)' if load > 0.5 else ''}")
    print("Whole-process wall time (min, median) and CPU time (min; user + system of the process and its "
          "children:\nsteadier than wall time on a shared machine). Memory in MB, three ways: max-proc: the largest single process (parent or "
          "any worker; wait4 rusage);\ntree RSS / tree PSS: peak sum over the process tree, sampled from /proc "
          "every 20 ms; RSS counts pages that forked workers share\ncopy-on-write with the parent in every "
          "process, PSS splits them (the memory really held). Peers' cached runs may lack PSS.\n")
    print(bench.table())
    print()
    print(bench.ratios())
    print()
    print(bench.targets())
    print()
    print(bench.findings_table())
    ok = True
    if args.roundtrip:
        text, ok = run_roundtrip(args.roundtrip_corpora.split(","))
        print()
        print(text)
    if args.json:
        from dataclasses import asdict

        args.json.write_text(json.dumps({c: {t: [asdict(m) for m in s.runs] for t, s in tools.items()}
                                         for c, tools in bench.results.items()}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
