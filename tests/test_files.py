"""What gradlint does to files and folders: it writes only the files it fixes, keeps their owner, and
never stops on one odd entry (a FIFO, a link loop, a folder it may not write, a path too deep)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest

DEFECT = "import torch\n\n\ndef f(x):\n    return x / x.norm(dim=-1, keepdim=True)\n"
PLAIN = "z = x / x.norm(dim=-1)\n"
FIXED = "z = x / x.norm(dim=-1).clamp_min(1e-6)\n"


def run_cli(cwd, *args, without_override=False, timeout=120):
    """gradlint in a subprocess; `without_override`: as root without the rights to ignore file modes."""
    command = [sys.executable, "-m", "gradlint", *args]
    if without_override and os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv is needed to drop root's override rights")
        command = [setpriv, "--bounding-set", "-dac_override,-dac_read_search", *command]
    env = {**os.environ, "GRADLINT_OUTPUT_FORMAT": "concise"}  # one line a finding, as the `gradlint` fixture
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    return done.returncode, done.stdout, done.stderr


# -- writing ----------------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand a file to another user")
def test_fix_as_root_keeps_owner_and_group(tmp_path, gradlint):
    path = tmp_path / "m.py"
    path.write_text(PLAIN)
    os.chown(path, 65534, 65534)  # nobody:nogroup, as on a mounted checkout
    gradlint(tmp_path, "fix", "--write", ".")
    info = path.stat()
    assert path.read_text() == FIXED and (info.st_uid, info.st_gid) == (65534, 65534)


def test_fix_in_a_read_only_folder_is_an_error_and_later_files_are_fixed(tmp_path):
    for folder in ("a_locked", "b_open"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.py").write_text(PLAIN)
    (tmp_path / "a_locked").chmod(0o555)
    try:
        code, out, err = run_cli(tmp_path, "fix", "--write", "--no-cache", ".", without_override=True)
    finally:
        (tmp_path / "a_locked").chmod(0o755)
    assert code == 2
    assert err.strip() == "error: a_locked/m.py: cannot write: folder is read-only; not written"
    assert "a_locked/m.py:1:5: GL001" in out and "1 fixed, 1 remaining" in out
    assert (tmp_path / "a_locked" / "m.py").read_text() == PLAIN
    assert (tmp_path / "b_open" / "m.py").read_text() == FIXED
    assert sorted(os.listdir(tmp_path / "a_locked")) == ["m.py"]


def test_read_only_file_is_left_without_root_rights_too(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(PLAIN)
    path.chmod(0o444)
    code, _, err = run_cli(tmp_path, "fix", "--write", "--no-cache", ".", without_override=True)
    assert code == 2 and "m.py: file is read-only; not written" in err and path.read_text() == PLAIN


def test_a_read_only_project_is_still_checked(tmp_path):
    (tmp_path / "m.py").write_text(PLAIN)
    tmp_path.chmod(0o555)
    try:
        code, out, err = run_cli(tmp_path, "check", ".", without_override=True)
    finally:
        tmp_path.chmod(0o755)
    assert (code, err) == (1, "") and "m.py:1:5: GL001" in out
    assert sorted(os.listdir(tmp_path)) == ["m.py"]


def test_temp_files_of_a_killed_fix_are_removed_by_the_next_run(tmp_path, gradlint):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(PLAIN)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / "pkg" / f".m.py.{dead}.0badc0de.gradlint-tmp"
    live = tmp_path / "pkg" / f".m.py.{os.getpid()}.0badc0de.gradlint-tmp"  # a run still writing it
    for leftover in (stale, live):
        leftover.write_text(PLAIN[:5])
    gradlint(tmp_path, "check", ".")
    assert not stale.exists() and live.exists()
    live.unlink()
    stale.write_text(PLAIN[:5])
    gradlint(tmp_path, "check", "pkg/m.py")  # a file named on the command line: its folder too
    assert not stale.exists()


def test_a_killed_fix_leaves_the_old_file_or_the_new_one(tmp_path):
    """kill -9 during `fix --write` of many files: every file is whole, and the next run cleans up."""
    for i in range(40):
        (tmp_path / f"m{i:02d}.py").write_text(DEFECT + "# padding\n" * 2000)
    process = subprocess.Popen([sys.executable, "-m", "gradlint", "fix", "--write", "--no-cache", "."],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(400):  # until the first file is written
            if any("normalize" in (tmp_path / f"m{i:02d}.py").read_text() for i in range(40)):
                break
            if process.poll() is not None:
                break
            import time

            time.sleep(0.01)
    finally:
        process.kill()
        process.wait()
    for i in range(40):
        text = (tmp_path / f"m{i:02d}.py").read_text()
        assert text in (DEFECT + "# padding\n" * 2000,) or "normalize(x, dim=-1, eps=1e-6)" in text
        compile(text, "m.py", "exec")
    run_cli(tmp_path, "check", "--no-cache", ".")
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".gradlint-tmp")]


# -- symbolic links -------------------------------------------------------------------------------

def test_link_met_in_a_walk_to_a_file_outside_is_checked_but_never_written(tmp_path, gradlint):
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (outside / "shared.py").write_text(PLAIN)
    (project / "link.py").symlink_to(outside / "shared.py")
    code, out, _ = gradlint(project, "check", ".")
    assert code == 1 and "link.py:1:5: GL001" in out
    code, out, err = gradlint(project, "fix", "--write", ".")
    assert code == 1 and (outside / "shared.py").read_text() == PLAIN
    assert "link.py: a symbolic link met in the walk that points outside the paths given; not fixed" in err
    gradlint(project, "fix", "--write", "link.py")  # named: the user asks for it, as ruff does
    assert (outside / "shared.py").read_text() == FIXED and (project / "link.py").is_symlink()


def test_link_to_a_file_inside_the_paths_is_checked_once(tmp_path, gradlint):
    (tmp_path / "real.py").write_text(PLAIN)
    (tmp_path / "alias.py").symlink_to(tmp_path / "real.py")
    code, out, _ = gradlint(tmp_path, "check", ".")
    assert code == 1 and out.count("GL001") == 1 and "real.py:1:5" in out
    gradlint(tmp_path, "fix", "--write", ".")
    assert (tmp_path / "real.py").read_text() == FIXED and (tmp_path / "alias.py").is_symlink()


def test_link_loop_inside_a_tree_is_skipped_with_a_warning(tmp_path, gradlint):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(PLAIN)
    os.symlink("b.py", tmp_path / "pkg" / "a.py")
    os.symlink("a.py", tmp_path / "pkg" / "b.py")
    code, out, err = gradlint(tmp_path, "check", ".")
    assert code == 1 and "pkg/m.py:1:5: GL001" in out
    assert "warning: pkg/a.py: Too many levels of symbolic links; skipped" in err.splitlines()


# -- odd entries ------------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_named_on_the_command_line_is_skipped_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe.py")
    (tmp_path / "m.py").write_text(PLAIN)
    code, out, err = run_cli(tmp_path, "check", "pipe.py", "m.py", timeout=60)
    assert code == 1 and "m.py:1:5: GL001" in out
    assert err == "warning: pipe.py: a FIFO, not a Python file; skipped\n"
    code, out, _ = run_cli(tmp_path, "check", ".", timeout=60)  # met in a walk: not a file, not checked
    assert code == 1 and "pipe.py" not in out


def test_a_path_too_deep_to_open_is_one_error_and_the_run_goes_on(tmp_path):
    (tmp_path / "top.py").write_text(PLAIN)
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(5000):
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        with open(os.open("m.py", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as handle:
            handle.write(PLAIN)
    finally:
        os.close(fd)
    try:
        code, out, err = run_cli(tmp_path, "check", "--no-cache", ".")
        assert code == 2 and "top.py:1:5: GL001" in out
        [line] = err.splitlines()
        assert line.startswith("error: d/d/d/") and "cannot list this folder (File name too long)" in line
        assert len(line) < 400
    finally:
        subprocess.run(["rm", "-rf", str(tmp_path / "d")], check=False)


def test_newline_in_a_file_name_is_escaped_in_text_output(tmp_path, gradlint):
    (tmp_path / "two\nlines.py").write_text(PLAIN)
    code, out, _ = gradlint(tmp_path, "check", ".")
    assert code == 1 and out.splitlines()[0].startswith("two\\nlines.py:1:5: GL001")
    code, out, _ = gradlint(tmp_path, "fix", ".")
    assert "--- a/two\\nlines.py" in out


# -- .gitignore, as git reads it -----------------------------------------------------------------

@pytest.mark.parametrize("line, ignored", [
    ("/", []), ("!", []), ("//", []), ("\\", []), ("a.py\\", []), ("[z-a]", []), ("[z-a].py", ["z.py"]),
    ("[", []), ("*.py", ["a.py", "sub/c.py", "z.py"]), ("sub/", ["sub/c.py"]), ("/*", ["a.py", "sub/c.py", "z.py"]),
    ("[!a].py", ["sub/c.py", "z.py"]), ("a.py ", ["a.py"]),
])
def test_gitignore_lines_mean_what_they_mean_to_git(tmp_path, gradlint, line, ignored):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text(line + "\n")
    (tmp_path / "sub").mkdir()
    for name in ("a.py", "z.py", "sub/c.py"):
        (tmp_path / name).write_text(PLAIN)
    code, out, err = gradlint(tmp_path, "check", "--no-cache", ".")
    reported = sorted(row.split(":")[0] for row in out.splitlines() if "GL001" in row)
    assert reported == sorted({"a.py", "z.py", "sub/c.py"} - set(ignored))
    assert err == ("" if reported else "warning: No Python files found under the given path(s)\n")
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
        shutil.rmtree(tmp_path / ".gradlint_cache", ignore_errors=True)
        done = subprocess.run(["git", "check-ignore", "--no-index", "a.py", "z.py", "sub/c.py"], cwd=tmp_path,
                              capture_output=True, text=True)
        assert sorted(done.stdout.split()) == sorted(ignored)  # the table above is git's own answer


@pytest.mark.parametrize("pattern", ["!", "/", "\\"])
def test_exclude_pattern_git_would_ignore_is_a_one_line_error(tmp_path, gradlint, pattern):
    (tmp_path / "pyproject.toml").write_text(f"[tool.gradlint]\nexclude = [{pattern!r}]\n".replace("'", '"')
                                             .replace('"\\"', '"\\\\"'))
    (tmp_path / "m.py").write_text(PLAIN)
    code, out, err = gradlint(tmp_path, "check", ".")
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and "exclude: pattern" in err


def test_mode_is_kept_through_a_fix(tmp_path, gradlint):
    path = tmp_path / "script.py"
    path.write_text(PLAIN)
    path.chmod(0o751)
    gradlint(tmp_path, "fix", "--write", ".")
    assert stat.S_IMODE(path.stat().st_mode) == 0o751 and path.read_text() == FIXED


def test_a_folder_that_cannot_be_listed_is_an_error_and_the_walk_goes_on(tmp_path):
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed" / "m.py").write_text(PLAIN)
    (tmp_path / "open.py").write_text(PLAIN)
    (tmp_path / "closed").chmod(0)
    try:
        code, out, err = run_cli(tmp_path, "check", "--no-cache", ".", without_override=True)
    finally:
        (tmp_path / "closed").chmod(0o755)
    assert code == 2 and "open.py:1:5: GL001" in out
    assert err == "error: closed: cannot list this folder (Permission denied); not checked\n"
