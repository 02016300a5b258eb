"""Bad input gets a clear error and loses nothing."""

from __future__ import annotations

import os
import stat

import pytest

DEFECT = "import torch\n\n\ndef f(x):\n    return x / x.norm(dim=-1, keepdim=True)\n"


def test_file_that_does_not_parse_is_a_finding_and_the_run_goes_on(tmp_path, gradlint):
    (tmp_path / "broken.py").write_text("def broken(:\n    pass\n")  # no rule's trigger in it
    (tmp_path / "model.py").write_text(DEFECT)
    code, out, _ = gradlint(tmp_path, "check", ".")
    assert code == 1
    assert "broken.py:1:12: E999 SyntaxError: invalid syntax" in out
    assert "model.py:5:12: GL001" in out


@pytest.mark.parametrize("source, error", [
    ("x = 1\nfrom __future__ import annotations\n", "E999 SyntaxError: from __future__ imports must occur"),
    ("from __future__ import braces\n", "E999 SyntaxError: not a chance"),
    ("nonlocal x\n", None),  # the parser accepts it (the compiler would not): not E999, as before
    ("x = 1\0\n", "E999 SyntaxError"),
])
def test_a_file_no_rule_looks_into_is_still_checked_for_syntax(tmp_path, gradlint, source, error):
    (tmp_path / "plain.py").write_text(source)
    code, out, _ = gradlint(tmp_path, "check", "plain.py")
    assert (error in out if error else "E999" not in out), out
    assert code == (1 if error else 0)


def test_fix_leaves_a_file_that_does_not_parse_untouched(tmp_path, gradlint):
    broken = "x = x / x.norm(\n"
    (tmp_path / "broken.py").write_text(broken)
    gradlint(tmp_path, "fix", "--write", ".")
    assert (tmp_path / "broken.py").read_text() == broken


def test_not_utf8_is_reported_and_untouched(tmp_path, gradlint):
    raw = b"x = 1\n\xff\xfe = 2\n"
    (tmp_path / "binary.py").write_bytes(raw)
    code, out, _ = gradlint(tmp_path, "fix", "--write", ".")
    assert code == 1 and "binary.py:1:1: E902" in out and "not valid UTF-8" in out
    assert (tmp_path / "binary.py").read_bytes() == raw


def test_latin1_with_coding_cookie_is_read_and_written_back_in_latin1(tmp_path, gradlint):
    source = "# -*- coding: latin-1 -*-\n# café\nz = x / x.norm(dim=-1)\n"
    (tmp_path / "legacy.py").write_bytes(source.encode("latin-1"))
    assert gradlint(tmp_path, "check", ".")[0] == 1
    gradlint(tmp_path, "fix", "--write", ".")
    assert (tmp_path / "legacy.py").read_bytes() == source.replace(
        "x.norm(dim=-1)", "x.norm(dim=-1).clamp_min(1e-6)").encode("latin-1")


def test_empty_file(tmp_path, gradlint):
    (tmp_path / "empty.py").write_bytes(b"")
    assert gradlint(tmp_path, "check", ".") [:2] == (0, "All checks passed!\n")


def test_ten_megabyte_file(tmp_path, gradlint):
    body = "def f{i}(x):\n    return x + {i}\n"
    text = "".join(body.format(i=i) for i in range(330_000)) + "z = y / y.norm(dim=-1)\n"
    assert len(text) > 10_000_000
    (tmp_path / "huge.py").write_text(text)
    code, out, _ = gradlint(tmp_path, "check", "--no-cache", ".")
    assert code == 1 and f"huge.py:{text.count(chr(10))}:5: GL001" in out


def test_crlf_and_bom_are_kept(tmp_path, gradlint):
    raw = b"\xef\xbb\xbfimport torch\r\n\r\n\r\ndef f(x):\r\n    return x / x.norm(dim=-1, keepdim=True)  # why\r\n"
    (tmp_path / "win.py").write_bytes(raw)
    gradlint(tmp_path, "fix", "--write", ".")
    assert (tmp_path / "win.py").read_bytes() == raw.replace(
        b"x / x.norm(dim=-1, keepdim=True)", b"torch.nn.functional.normalize(x, dim=-1, eps=1e-6)")


def test_crlf_file_gains_an_import_with_crlf(tmp_path, gradlint):
    raw = b"def f(x):\r\n    return x / x.norm(dim=-1, keepdim=True)\r\n"
    (tmp_path / "win.py").write_bytes(raw)
    gradlint(tmp_path, "fix", "--write", ".")
    fixed = (tmp_path / "win.py").read_bytes()
    assert fixed.startswith(b"import torch.nn.functional as F\r\n")
    assert b"\n" not in fixed.replace(b"\r\n", b"")


def test_read_only_file_is_an_error_and_untouched(tmp_path, gradlint):
    path = tmp_path / "locked.py"
    path.write_text(DEFECT)
    path.chmod(0o444)
    code, _, err = gradlint(tmp_path, "fix", "--write", ".")
    assert code == 2 and "locked.py: file is read-only; not written" in err
    assert path.read_text() == DEFECT


def test_write_keeps_mode_and_leaves_no_temp_files(tmp_path, gradlint):
    path = tmp_path / "script.py"
    path.write_text(DEFECT)
    path.chmod(0o751)
    gradlint(tmp_path, "fix", "--write", ".")
    assert stat.S_IMODE(path.stat().st_mode) == 0o751
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".gradlint_cache")) == ["script.py"]


def test_symlinked_file_is_fixed_through_the_link(tmp_path, gradlint):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.py"
    target.write_text(DEFECT)
    (tmp_path / "link.py").symlink_to(target)
    gradlint(tmp_path, "fix", "--write", "link.py")
    assert (tmp_path / "link.py").is_symlink()
    assert "normalize" in target.read_text()


def test_symlink_loop_does_not_hang(tmp_path, gradlint):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "model.py").write_text(DEFECT)
    os.symlink("..", tmp_path / "pkg" / "loop")
    os.symlink("self", tmp_path / "pkg" / "self")  # a link to itself
    code, out, _ = gradlint(tmp_path, "check", ".")
    assert code == 1 and out.count("GL001") == 1


def test_file_changed_during_the_run_is_not_overwritten(tmp_path, monkeypatch):
    from gradlint import fsio

    path = tmp_path / "model.py"
    path.write_text(DEFECT)
    original = path.read_bytes()
    path.write_text(DEFECT + "# edited meanwhile\n")
    with pytest.raises(fsio.WriteError):
        fsio.atomic_write(path, b"new", original)
    assert path.read_text().endswith("# edited meanwhile\n")


def test_a_file_libcst_cannot_give_back_byte_for_byte_is_not_fixed(tmp_path, gradlint):
    # LibCST 1.x drops the indented comment line before a CRLF comment at the end of a module.
    raw = b"import torch\ndef f(x: torch.Tensor):\n    return x / x.norm()\n #c\n #d\r\n"  # a safe fix
    (tmp_path / "m.py").write_bytes(raw)
    code, out, err = gradlint(tmp_path, "fix", "--write", ".")
    import libcst

    if libcst.parse_module(raw.decode()).code == raw.decode():  # a fixed LibCST: simply fixed
        assert code == 0 and b" #c\n #d\r\n" in (tmp_path / "m.py").read_bytes()
        return
    assert code == 2 and "m.py: not fixed: LibCST does not give this file back byte for byte" in err
    assert (tmp_path / "m.py").read_bytes() == raw
