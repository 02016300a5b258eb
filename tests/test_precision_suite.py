"""The precision suite: every rule over pinned real code, each finding against its judged verdict in
`tests/verdicts/<CODE>.tsv` (format and workflow: tests/verdicts/README.md).

Corpora (`tests/verdicts/corpora.toml`): open-clip-torch, timm, transformers and lightning from PyPI,
downloaded once into a cache outside the repository (CI included); GitHub snapshots (pytorch/examples,
nanoGPT, minGPT, the Lightning and accelerate repositories with their examples, timm's and open_clip's
repositories with their training scripts) only where `$GRADLINT_REPOS_DIR` holds them at the pinned commit,
else skipped. The PyPI corpora hold the training loops the GL004–GL007 rules must read right: open_clip's
`open_clip_train/train.py` (distillation teacher in eval, clipping behind a flag, unscale_ inside it),
transformers' `Trainer` (backward in `training_step`, the step in the loop that calls it), Lightning's
loops, closures and Fabric, timm's `NativeScaler` and distillation tasks.

A run fails when a FALSE-judged finding is reported (unless its rule's to-fix list,
`tests/verdicts/to-fix/<CODE>.tsv`, still holds it: a list that only shrinks), a TRUE-judged one disappears,
or a finding has no verdict; the message gives the verdict-file line to add, change or remove. Every file with a fixable
finding is fixed (`tests/realcode.py`): `fix --write` and, if a fix is unsafe, `fix --write --unsafe-fixes`
must compile, be idempotent, define every name they use and call `.eval()`/`.train()` only on values.

Cost, measured on two cores: transformers about 45 s of CPU (19 s to lint its 2912 files with every rule,
the rest fixing its 36 files with findings), the other PyPI corpora about 5 s; about 30 s of wall time.
The GitHub snapshots add about 90 s of CPU where present. Marked `slow` (`-m "not slow"` leaves them out).
"""

from __future__ import annotations

import os
import warnings
from functools import cache

import pytest
from realcode import introduced_name_problems, lint_and_fix

from benchmarks.corpus import ALL_CORPORA, PYPI, CorpusUnavailable
from benchmarks.suite import (
    JUDGE,
    Comparison,
    Scan,
    Verdict,
    VerdictFileError,
    load_to_fix,
    load_verdicts,
    scan,
    verdict_file,
)
from gradlint.registry import all_rules


@cache
def _scan(corpus: str) -> Scan:
    try:
        return scan(corpus, lint_and_fix)
    except CorpusUnavailable as error:
        if corpus.startswith(PYPI) and os.environ.get("CI"):
            raise  # CI reaches PyPI: a missing download is a failure there, not a skip
        pytest.skip(f"corpus {corpus} unavailable: {str(error).splitlines()[0]}")


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ALL_CORPORA)
def test_findings_match_the_verdicts(corpus):
    comparison = Comparison.of(_scan(corpus), load_verdicts(), load_to_fix())
    if comparison.debatable_gone and not comparison.failed:
        warnings.warn(comparison.explain(), stacklevel=1)
    assert not comparison.failed, "\n" + comparison.explain()


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ALL_CORPORA)
def test_fixes_break_nothing(corpus):
    problems = _scan(corpus).problems
    assert not problems, "\n" + "\n".join(f"{corpus} {path}: {problem}"
                                           for path, found in sorted(problems.items()) for problem in found)


def test_verdict_files_are_well_formed_and_name_rules():
    verdicts = load_verdicts()  # raises VerdictFileError, with file:line, on any malformed line
    codes = {rule.code for rule in all_rules()}
    assert {key[3] for key in verdicts} <= codes
    not_false = [key for key in load_to_fix() if key not in verdicts or verdicts[key].verdict != "FALSE"]
    assert not_false == [], "a to-fix line must name a finding judged FALSE"


# -- the suite's own machinery, on made-up data -----------------------------------------------------

def _verdicts(tmp_path, text: str, code: str = "GL004"):
    (tmp_path / f"{code}.tsv").write_text(text, encoding="utf-8")
    return load_verdicts(tmp_path)


def test_a_malformed_verdict_line_names_its_file_and_line(tmp_path):
    for text, problem in [
        ("# comment\n\ngh:karpathy/nanoGPT train.py:3 TRUE spaces, not tabs\n", "want 4 TAB-separated fields"),
        ("gh:karpathy/nanoGPT\ttrain.py:3\tMAYBE\twhy\n", "verdict 'MAYBE' is not one of"),
        ("gh:karpathy/nanoGPT\ttrain.py:3\tTRUE\t\n", "needs its reason"),
        ("gh:nobody/nothing\ttrain.py:3\tTRUE\twhy\n", "unknown corpus 'gh:nobody/nothing'"),
        ("gh:karpathy/nanoGPT\ttrain.py\tTRUE\twhy\n", "want <path>:<line>"),
        (f"gh:karpathy/nanoGPT\ttrain.py:3\t{JUDGE}\twhy\n", "is not one of"),
    ]:
        with pytest.raises(VerdictFileError) as error:
            _verdicts(tmp_path, text)
        assert str(error.value).endswith(problem) or problem in str(error.value)
        assert str(error.value).startswith(str(tmp_path / "GL004.tsv") + ":")
    with pytest.raises(VerdictFileError, match=r"GL004.tsv:2: judged twice \(also .*GL004.tsv:1\)"):
        _verdicts(tmp_path, "gh:karpathy/nanoGPT\ttrain.py:3\tTRUE\ta\ngh:karpathy/nanoGPT\ttrain.py:3\tFALSE\tb\n")


def test_a_failing_comparison_says_which_line_to_add_or_remove(tmp_path):
    verdicts = _verdicts(tmp_path, "\n".join([
        "gh:karpathy/nanoGPT\ttrain.py:10\tFALSE\tthe model is frozen",
        "gh:karpathy/nanoGPT\ttrain.py:20\tTRUE\tno eval() before the loss estimate",
        "gh:karpathy/nanoGPT\ttrain.py:30\tDEBATABLE\ta warm-up pass",
        "gh:karpathy/nanoGPT\ttrain.py:40\tTRUE\tstill found",
        "pypi:timm\ttrain.py:10\tTRUE\tanother corpus",
    ]) + "\n")
    found = {("train.py", 10, "GL004"): "m", ("train.py", 40, "GL004"): "m",
             ("model.py", 5, "GL004"): "`model` is called under `torch.no_grad()`"}
    comparison = Comparison.of(Scan("gh:karpathy/nanoGPT", 2, found, {}), verdicts)
    assert comparison.failed
    assert [v.row for v in comparison.false_reported] == [10]
    assert [v.row for v in comparison.true_missing] == [20]
    assert [v.row for v in comparison.debatable_gone] == [30]
    text = comparison.explain()
    file = tmp_path / "GL004.tsv"
    assert f"  {file}:1: gh:karpathy/nanoGPT\ttrain.py:10\tFALSE\tthe model is frozen" in text
    assert f"  {file}:2: gh:karpathy/nanoGPT\ttrain.py:20\tTRUE\tno eval() before the loss estimate" in text
    assert f"  {file}:3: gh:karpathy/nanoGPT\ttrain.py:30\tDEBATABLE\ta warm-up pass" in text
    assert (f"  add to {verdict_file('GL004')}:\n    # GL004 `model` is called under `torch.no_grad()`\n"
            f"    gh:karpathy/nanoGPT\tmodel.py:5\t{JUDGE}\t") in text
    assert "train.py:40" not in text
    assert comparison.counts("GL004") == {
        "findings": 3, "TRUE": 1, "FALSE": 1, "DEBATABLE": 0, "unjudged": 1, "missed": 1}


def test_the_to_fix_list_tolerates_its_false_findings_and_only_shrinks(tmp_path):
    verdicts = _verdicts(tmp_path, "pypi:timm\ta.py:3\tFALSE\tguarded\npypi:timm\ta.py:9\tFALSE\tguarded\n")
    (tmp_path / "to-fix").mkdir()
    (tmp_path / "to-fix" / "GL004.tsv").write_text("# still reported\npypi:timm\ta.py:3\npypi:timm\ta.py:9\n")
    to_fix = load_to_fix(tmp_path / "to-fix")
    both = Comparison.of(Scan("pypi:timm", 1, {("a.py", 3, "GL004"): "m", ("a.py", 9, "GL004"): "m"}, {}),
                         verdicts, to_fix)
    assert not both.failed and [v.row for v in both.false_to_fix] == [3, 9]
    assert both.counts("GL004")["FALSE"] == 2
    one_gone = Comparison.of(Scan("pypi:timm", 1, {("a.py", 3, "GL004"): "m"}, {}), verdicts, to_fix)
    assert one_gone.failed
    assert f"delete the line from the to-fix list:\n  {tmp_path / 'to-fix' / 'GL004.tsv'}:3: pypi:timm\ta.py:9" \
        in one_gone.explain()
    unlisted = Comparison.of(Scan("pypi:timm", 1, {("a.py", 3, "GL004"): "m", ("a.py", 9, "GL004"): "m"}, {}),
                             verdicts, {})
    assert [v.row for v in unlisted.false_reported] == [3, 9]


def test_a_judged_scan_passes():
    verdict = Verdict("pypi:timm", "a.py", 3, "GL001", "TRUE", "why", "x.tsv:1")
    comparison = Comparison.of(Scan("pypi:timm", 1, {("a.py", 3, "GL001"): "m"}, {}), {verdict.key: verdict})
    assert not comparison.failed and comparison.explain() == ""


def test_name_checks_catch_what_a_broken_fix_introduces():
    before = ("def setup_model(cfg):\n    return cfg.build()\n\n\ndef main(cfg):\n"
              "    m = setup_model(cfg)\n    with torch.no_grad():\n        m(1)\n")
    # The fix took the callee for the model.
    after = before.replace("    with", "    setup_model.eval()\n    with")
    assert introduced_name_problems(before, after) == [
        "calls `setup_model.eval()` in `main`, where `setup_model` is a function defined here, not an nn.Module"]
    # It spelled `F` without importing it.
    assert introduced_name_problems("import torch\n", "import torch\nx = F.normalize(torch.ones(1))\n") == [
        "uses `F`, which the fixed file never defines"]
    # A local class, an imported module.
    code = "import models\n\n\ndef run():\n    class Net:\n        pass\n    return Net\n"
    fixed = code.replace("    return", "    Net.train()\n    models.eval()\n    return")
    assert introduced_name_problems(code, fixed) == [
        "calls `Net.train()` in `run`, where `Net` is a class, not an nn.Module",
        "calls `models.eval()` in `run`, where `models` is an imported module, not an nn.Module"]


def test_name_checks_accept_a_sound_fix():
    before = ("import torch\n\n\nclass Net:\n    def evaluate(self, model, data):\n"
              "        with torch.no_grad():\n            return model(data)\n")
    after = before.replace("        with", "        model.eval()\n        with")
    assert introduced_name_problems(before, after) == []
    # An import the fix adds resolves the name it uses.
    assert introduced_name_problems("x = 1\n", "import torch\nx = torch.ones(1)\n") == []
    # Calls that were there before the fix are not the fix's.
    code = "import m\nm.eval()\n"
    assert introduced_name_problems(code, code) == []
    # `from m import net` may import a module instance: not reported.
    code = "from m import net\n\n\ndef run():\n    return net(1)\n"
    assert introduced_name_problems(code, code.replace("    return", "    net.eval()\n    return")) == []


def test_a_github_snapshot_is_used_only_at_its_pinned_commit(tmp_path, monkeypatch):
    from benchmarks.corpus import SNAPSHOTS, corpus_root

    pinned = SNAPSHOTS["karpathy/nanoGPT"]
    monkeypatch.delenv("GRADLINT_REPOS_DIR", raising=False)
    with pytest.raises(CorpusUnavailable, match="GRADLINT_REPOS_DIR is not set"):
        corpus_root("gh:karpathy/nanoGPT")
    monkeypatch.setenv("GRADLINT_REPOS_DIR", str(tmp_path))
    with pytest.raises(CorpusUnavailable, match="no snapshot of karpathy/nanoGPT"):
        corpus_root("gh:karpathy/nanoGPT")
    (tmp_path / "karpathy+nanoGPT").mkdir()
    with pytest.raises(CorpusUnavailable, match="cannot tell the commit"):
        corpus_root("gh:karpathy/nanoGPT")
    (tmp_path / "COMMITS.txt").write_text(f"karpathy+nanoGPT {'0' * 40}\n")
    with pytest.raises(CorpusUnavailable, match=f"is at {'0' * 40}; the verdicts are for {pinned}"):
        corpus_root("gh:karpathy/nanoGPT")
    (tmp_path / "COMMITS.txt").write_text(f"karpathy+minGPT {'0' * 40}\nkarpathy+nanoGPT {pinned}\n")
    assert corpus_root("gh:karpathy/nanoGPT") == tmp_path / "karpathy+nanoGPT"
