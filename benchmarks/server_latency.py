"""How fast the language server re-lints a 2 000-line file after a one-line edit, beside a cold
`gradlint check` of the same file and ruff's.

    python benchmarks/server_latency.py [--edits 40] [--file PATH]

Two documents of about 2 000 lines: `training`, built from this repository's fixtures (the functions
renamed and repeated until 2 000 lines: every function is one a rule must parse, the worst case for
re-linting), and `real`, transformers' `modeling_wav2vec2.py` (2 026 lines, from the pinned corpus; a
download on first use, skipped when offline), or `--file`.

For each: the server is started (`python -m gradlint.server`) and driven by a real LSP client (pygls):
the document is opened, then each edit changes one line inside a function (an incremental
`didChange`), and the time from sending it to receiving its `publishDiagnostics` is measured; the median
is what the target (<= 50 ms) is about. Where a rule needs the whole module, those first diagnostics
keep that rule's verdicts from the last whole-module lint and the exact ones follow once typing pauses
(`EXACT_AFTER_S`): for a few edits the benchmark waits for those too ("exact"). A last series inserts a
line (every row below moves). `WarmLinter.lint_quick` alone (no protocol) is timed on the same edits,
and the cold command line (`gradlint check --no-cache FILE`, a new process) beside
`ruff check --no-cache FILE` when ruff is installed. Nothing is asserted: it prints.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_MS = 50.0
SETTLED_EDITS = 5  # edits after which the benchmark waits for the exact diagnostics
SETTLE_S = 6.0  # no diagnostics for this long after the last ones: the server is done with that version


def training_document(lines: int = 2000) -> str:
    """The fixtures' modules as one long training file: their imports once at the top, then their code
    (functions and classes renamed per copy) repeated to `lines` lines."""
    imports: dict = {}
    bodies = []
    for path in sorted((ROOT / "fixtures").glob("*/*.py")):
        source = path.read_text()
        source_lines = source.splitlines(keepends=True)
        drop = set()
        for node in ast.parse(source).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imports.setdefault("".join(source_lines[node.lineno - 1:node.end_lineno]), None)
                drop.update(range(node.lineno - 1, node.end_lineno))
        bodies.append("".join(line for i, line in enumerate(source_lines) if i not in drop))
    parts, count, copy = ["".join(imports)], len(imports), 0
    while count < lines:
        for body in bodies:
            renamed = re.sub(r"^(\s*)(def|class) (\w+)", rf"\1\2 \3_{copy}", body, flags=re.M)
            parts.append(renamed)
            count += renamed.count("\n")
        copy += 1
    return "\n".join(parts)


def real_document() -> "str | None":
    try:
        from benchmarks.corpus import CorpusUnavailable, corpus_dir

        path = corpus_dir("transformers") / "transformers" / "models" / "wav2vec2" / "modeling_wav2vec2.py"
        return path.read_text(encoding="utf-8")
    except (CorpusUnavailable, OSError) as error:
        print(f"(real document skipped: {error})")
        return None


def edit_rows(text: str, count: int) -> list[int]:
    """Rows (0-based) inside function bodies, spread over the file."""
    rows = sorted({node.body[0].lineno - 1 for node in ast.walk(ast.parse(text))
                   if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.body})
    step = max(1, len(rows) // count)
    picked = rows[::step][:count]
    return (picked * (count // max(1, len(picked)) + 1))[:count]


async def server_latencies(text: str, path: Path, rows: list[int]) -> dict:
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("latency-bench", "1")
    arrivals: dict[int, list] = {}  # version -> [(time, number of diagnostics)]
    waiters: dict[int, asyncio.Future] = {}

    @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def published(params: types.PublishDiagnosticsParams) -> None:
        arrivals.setdefault(params.version, []).append((time.perf_counter(), len(params.diagnostics)))
        waiter = waiters.pop(params.version, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    uri = path.as_uri()

    async def send(version: int, notify, settle: bool = False) -> tuple[float, float, int]:
        """(ms to the first diagnostics of `version`, ms to its last (after `settle`), diagnostics)."""
        waiters[version] = asyncio.get_running_loop().create_future()
        start = time.perf_counter()
        notify()
        await asyncio.wait_for(waiters[version], 120)
        if settle:  # the exact lint follows a pause: wait until nothing more comes for a while
            while time.perf_counter() - max(start, arrivals[version][-1][0]) < SETTLE_S:
                await asyncio.sleep(0.05)
        first, last = arrivals[version][0][0], arrivals[version][-1]
        return (first - start) * 1000, (last[0] - start) * 1000, last[1]

    def change(version: int, row: int, start: int, end: int, new_text: str):
        params = types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(start=types.Position(line=row, character=start),
                                  end=types.Position(line=row, character=end)), text=new_text)])
        return lambda: client.text_document_did_change(params)

    await client.start_io(sys.executable, "-m", "gradlint.server")
    await client.initialize_async(types.InitializeParams(capabilities=types.ClientCapabilities(),
                                                         root_uri=path.parent.as_uri()))
    client.initialized(types.InitializedParams())
    opened = types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=uri, language_id="python", version=1, text=text))
    open_ms, _, findings = await send(1, lambda: client.text_document_did_open(opened), settle=True)
    lines = text.splitlines(keepends=True)
    version, typed, settled, inserted = 1, [], [], []
    for i, row in enumerate(rows):  # typing: one line changed (a comment appended), then changed back
        end = len(lines[row].rstrip("\r\n"))
        settle = i < SETTLED_EDITS
        version += 1
        first, last, _ = await send(version, change(version, row, end, end, f"  # edit {i}"), settle)
        typed.append(first)
        if settle:
            settled.append(last)
        version += 1
        await send(version, change(version, row, end, end + len(f"  # edit {i}"), ""), settle)
    for row in rows[:SETTLED_EDITS]:  # a line inserted: every row below moves
        indent = lines[row][: len(lines[row]) - len(lines[row].lstrip())]
        version += 1
        inserted.append((await send(version, change(version, row, 0, 0, f"{indent}pass\n")))[0])
        lines.insert(row, f"{indent}pass\n")
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return {"open_ms": open_ms, "findings": findings, "typed": typed, "settled": settled, "inserted": inserted}


def in_process(text: str, path: Path, rows: list[int]) -> list[float]:
    from gradlint.registry import all_rules
    from gradlint.warm import WarmLinter

    linter = WarmLinter(all_rules())
    linter.lint(text, str(path))  # the open
    lines = text.splitlines(keepends=True)
    times = []
    for i, row in enumerate(rows):
        edited = list(lines)
        edited[row] = edited[row].rstrip("\r\n") + f"  # edit {i}\n"
        start = time.perf_counter()
        linter.lint_quick("".join(edited), str(path))
        times.append((time.perf_counter() - start) * 1000)
    return times


def _wall_ms(command: list, cwd: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _ruff() -> "str | None":
    beside = Path(sys.executable).parent / "ruff"
    return str(beside) if beside.exists() else shutil.which("ruff")


def _summary(times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(times):6.1f} ms  p90 {p90:6.1f} ms  (n={len(times)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=40)
    parser.add_argument("--runs", type=int, default=5, help="cold command-line runs")
    parser.add_argument("--file", type=Path, help="a Python file to use instead of the two documents")
    args = parser.parse_args()
    documents = {args.file.name: args.file.read_text()} if args.file else {
        "training": training_document(), "real": real_document()}
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    ruff = _ruff()
    with tempfile.TemporaryDirectory() as folder:
        for name, text in documents.items():
            if text is None:
                continue
            path = Path(folder) / f"{name}.py"
            path.write_text(text)
            rows = edit_rows(text, args.edits)
            result = asyncio.run(server_latencies(text, path, rows))
            warm = in_process(text, path, rows)
            cold = _wall_ms([sys.executable, "-m", "gradlint", "check", "--no-cache", path.name], Path(folder), args.runs)
            median = statistics.median(result["typed"])
            print(f"\n{name}: {text.count(chr(10))} lines, {result['findings']} findings")
            print(f"  server, one-line edit -> first diagnostics   {_summary(result['typed'])}   "
                  f"target <= {TARGET_MS:.0f} ms: {'MET' if median <= TARGET_MS else 'MISSED'}")
            print(f"  server, one-line edit -> exact diagnostics   {_summary(result['settled'])}   "
                  "(whole-module verdicts after a pause)")
            print(f"  server, line inserted -> first diagnostics   {_summary(result['inserted'])}")
            print(f"  WarmLinter.lint_quick alone (no protocol)    {_summary(warm)}")
            print(f"  server, open (cold, in the server)           {result['open_ms']:6.1f} ms")
            print(f"  gradlint check --no-cache FILE (new process)  {_summary(cold)}")
            if ruff:
                ruff_times = _wall_ms([ruff, "check", "--no-cache", "--isolated", path.name], Path(folder), args.runs)
                print(f"  ruff check --no-cache FILE                    {_summary(ruff_times)}")
            else:
                print("  ruff: not installed (pip install ruff to compare)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
