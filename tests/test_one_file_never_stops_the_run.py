"""Files that CPython refuses are E999; valid files too deep for LibCST are linted or named; a file that
crashes the parser costs that file. The other files are always checked."""

from __future__ import annotations

import sys

import pytest

PLAIN = "z = x / x.norm(dim=-1)\n"


def deep_parens(n):
    return "x = " + "(" * n + "1" + ")" * n + "\n"


def chain(n, op="+"):
    return "x = " + f" {op} ".join(["a"] * n) + "\n"


@pytest.mark.parametrize("name, source, message", [
    ("parens.py", deep_parens(1600), "E999 SyntaxError: too many nested parentheses"),
    ("chain.py", chain(10_000), "E999 SyntaxError: RecursionError: maximum recursion depth exceeded"),
    ("nul.py", 'x = "a\0b"\n' + PLAIN, "E999 SyntaxError: source code string cannot contain null bytes"),
    ("future.py", "x = 1\nfrom __future__ import annotations\n" + PLAIN,
     "E999 SyntaxError: from __future__ imports must occur at the beginning of the file"),
    ("braces.py", "from __future__ import braces\n" + PLAIN, "E999 SyntaxError: not a chance"),
])
def test_what_cpython_refuses_is_e999_and_never_reaches_libcst(tmp_path, gradlint, name, source, message):
    (tmp_path / name).write_text(source)
    (tmp_path / "ok.py").write_text(PLAIN)
    code, out, err = gradlint(tmp_path, "check", "--no-cache", ".")
    assert code == 1 and err == "" and "ok.py:1:5: GL001" in out
    [line] = [row for row in out.splitlines() if row.startswith(name)]
    assert message in line


def test_bom_with_a_latin1_cookie_is_e999(tmp_path, gradlint):
    (tmp_path / "bom.py").write_bytes(b"\xef\xbb\xbf# -*- coding: latin-1 -*-\nz = x / x.norm(dim=-1)\n")
    code, out, _ = gradlint(tmp_path, "check", "--no-cache", ".")
    assert code == 1 and out.startswith("bom.py:1:1: E999 SyntaxError: encoding problem: utf-8") and "GL001" not in out


def test_over_a_megabyte_of_deep_files_with_workers(tmp_path, gradlint):
    padding = "# " + "x" * 100 + "\n"
    for i in range(14):
        (tmp_path / f"m{i:02d}.py").write_text(PLAIN + padding * 800)
    (tmp_path / "parens.py").write_text(deep_parens(1600))
    (tmp_path / "chain.py").write_text(chain(100_000))
    code, out, err = gradlint(tmp_path, "check", "--no-cache", "--jobs", "2", ".")
    assert code == 1 and err == "" and out.count("GL001") == 14 and out.count("E999") == 2


@pytest.mark.parametrize("source", [
    "x = " + "f(" * 150 + "1" + ")" * 150 + "\n",
    chain(400),
    chain(3000, "and"),
    deep_parens(199),
    "".join("    " * i + "if a:\n" for i in range(90)) + "    " * 90 + "pass\n",
])
def test_deep_but_valid_code_is_linted(tmp_path, gradlint, source):
    (tmp_path / "deep.py").write_text("import torch\n" + source + PLAIN)
    code, out, err = gradlint(tmp_path, "check", "--no-cache", ".")
    assert (code, err) == (1, "") and f"deep.py:{source.count(chr(10)) + 2}:5: GL001" in out
    code, _, err = gradlint(tmp_path, "fix", "--write", "--no-cache", ".")
    assert (code, err) == (0, "") and (tmp_path / "deep.py").read_text().endswith("x.norm(dim=-1).clamp_min(1e-6)\n")


def test_a_file_that_crashes_its_worker_is_retried_alone_and_reported(tmp_path, gradlint, monkeypatch):
    """A worker stack too small for LibCST's native parser on one file: that worker dies (SIGSEGV); the
    file is tried again alone, dies again, and is named; every other file is checked."""
    from gradlint import workers

    if not workers.fork_available():
        pytest.skip("workers are forked processes only where fork exists")
    monkeypatch.setattr(workers, "STACK_BYTES", 1 << 20)
    (tmp_path / "a.py").write_text(PLAIN)
    (tmp_path / "b.py").write_text("import torch\n" + PLAIN + chain(20_000, "and"))
    (tmp_path / "c.py").write_text(PLAIN)
    code, out, err = gradlint(tmp_path, "check", "--no-cache", ".")
    assert code == 2 and "a.py:1:5: GL001" in out and "c.py:1:5: GL001" in out and "b.py" not in out
    assert err == ("error: b.py: not checked: gradlint's parser crashed on this file (killed by SIGSEGV; "
                   "retried alone); please report this\n")


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="PEP 695 is valid syntax from Python 3.12")
def test_syntax_newer_than_this_python_says_so(tmp_path, gradlint):
    source = "import torch\n\ndef f[T](x: T) -> T:\n    return x / x.norm()\n"
    (tmp_path / "new.py").write_text(source)
    code, out, _ = gradlint(tmp_path, "check", ".")
    assert code == 1 and out.splitlines()[0] == (
        "new.py:3:6: E999 SyntaxError: expected '(' (type parameter syntax (PEP 695) needs Python 3.12; "
        f"gradlint runs on Python 3.{sys.version_info.minor})")
    code, out, err = gradlint(tmp_path, "fix", "--write", ".")
    assert code == 1 and "needs Python 3.12" in out and "please report" not in out + err
    assert (tmp_path / "new.py").read_text() == source
    code, _, err = gradlint(tmp_path, "fix", ".")  # the diff mode says it too
    assert code == 1 and "needs Python 3.12" in err


def test_valid_python_libcst_cannot_parse_is_named_not_e999(tmp_path, gradlint):
    (tmp_path / "strings.py").write_text("import torch\n" + PLAIN + "x = " + " ".join(['"a"'] * 10_000) + "\n")
    (tmp_path / "ok.py").write_text(PLAIN)
    code, out, err = gradlint(tmp_path, "check", "--no-cache", ".")
    if "strings.py" in out:  # a LibCST that parses it: then it is simply checked
        assert "strings.py:2:5: GL001" in out and err == ""
        return
    assert code == 2 and "ok.py:1:5: GL001" in out and "E999" not in out
    assert err.startswith("error: strings.py: not checked: LibCST cannot parse this file, which Python accepts")
