"""The cache is data, lives in a folder gradlint owns, and never writes outside it."""

from __future__ import annotations

import json
import os
import pickle

import pytest

PLAIN = "z = x / x.norm(dim=-1)\n"
CACHE = ".gradlint_cache"


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.gradlint]\n")
    (tmp_path / "m.py").write_text(PLAIN)
    return tmp_path


def _cache_files(folder):
    return sorted(p for p in (folder / CACHE).iterdir() if p.suffix == ".json")


def test_a_new_cache_folder_is_marked_for_git_and_backup_tools(project, gradlint):
    gradlint(project, "check", ".")
    assert (project / CACHE / ".gitignore").read_text() == "# Created by gradlint\n*\n"
    assert (project / CACHE / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    [data] = _cache_files(project)
    assert json.loads(data.read_text())["files"]["m.py"][0]  # plain JSON data


class Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_planted_pickle_is_never_loaded(project, gradlint):
    first = gradlint(project, "check", ".")
    [data] = _cache_files(project)
    planted = data.with_suffix(".pickle")
    planted.write_bytes(pickle.dumps({"m.py": Payload()}))
    data.write_bytes(pickle.dumps({"m.py": Payload()}))  # even under the JSON file's name
    assert gradlint(project, "check", ".") == first
    assert not (project / "PWNED").exists()
    assert not planted.exists()  # gradlint 0.1's pickles are removed, never read


@pytest.mark.parametrize("entry", [
    "not a list", ["abc"], ["00" * 16, "x"], [None, []],
    ["DIGEST", [["GL001", "msg", 1, 1, 1, 2, "r", [], None, "extra"]]],
    ["DIGEST", [["GL001", "msg", -1, 1, 1, 2, "r", [], None]]],
    ["DIGEST", [["GL001", "msg", 1, 1, 1, 2, "r", [], ["safe", "m", [["x", 1, 1, 1]]]]]],
    ["DIGEST", [["GL001", "msg", 1, 1, 1, 2, "r", [], ["maybe", "m", []]]]],
    ["DIGEST", "clean"],
])
def test_a_malformed_entry_is_a_miss(project, gradlint, entry):
    first = gradlint(project, "check", ".")
    [data] = _cache_files(project)
    content = json.loads(data.read_text())
    digest = content["files"]["m.py"][0]
    content["files"]["m.py"] = json.loads(json.dumps(entry).replace("DIGEST", digest))
    data.write_text(json.dumps(content))
    assert gradlint(project, "check", ".") == first


def test_an_entry_for_other_content_is_a_miss(project, gradlint):
    gradlint(project, "check", ".")
    [data] = _cache_files(project)
    content = json.loads(data.read_text())
    content["files"]["m.py"] = ["00" * 16, []]  # "clean", but for other bytes
    data.write_text(json.dumps(content))
    code, out, _ = gradlint(project, "check", ".")
    assert code == 1 and "m.py:1:5: GL001" in out


@pytest.mark.parametrize("value", ['"."', '"../outside"', '"/tmp"', '"sub/.."'])
def test_cache_dir_outside_the_project_is_refused(tmp_path, gradlint, value):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(f"[tool.gradlint]\ncache-dir = {value}\n")
    (project / "m.py").write_text(PLAIN)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = gradlint(project, "check", ".")
    assert code == 2 and "cache-dir" in err and "inside" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert sorted(p.name for p in project.iterdir()) == ["m.py", "pyproject.toml"]  # no .gitignore, no tag


def test_cache_dir_holding_a_project_folder_is_refused_and_left_alone(project, gradlint):
    (project / "pyproject.toml").write_text('[tool.gradlint]\ncache-dir = "src"\n')
    (project / "src").mkdir()
    (project / "src" / "model.py").write_text(PLAIN)
    for _ in range(2):  # the second run still sees the findings: nothing was hidden
        code, out, err = gradlint(project, "check", ".")
        assert code == 2 and "src/model.py:1:5: GL001" in out and "m.py:1:5: GL001" in out
        assert "cache folder" in err and "not gradlint's" in err and "model.py" in err
    assert sorted(p.name for p in (project / "src").iterdir()) == ["model.py"]


def test_cache_dir_of_the_wrong_type_is_an_error(project, gradlint):
    (project / "pyproject.toml").write_text("[tool.gradlint]\ncache-dir = 5\n")
    code, _, err = gradlint(project, "check", ".")
    assert code == 2 and err.strip() == f"error: {project / 'pyproject.toml'}: `cache-dir` must be a folder name " \
                                        "(a string); got 5"


def test_links_in_the_cache_folder_are_never_written_through(tmp_path, gradlint):
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (project / "m.py").write_text(PLAIN)
    (outside / "precious").write_text("keep me\n")
    folder = project / CACHE
    folder.mkdir()
    (folder / "CACHEDIR.TAG").symlink_to(outside / "precious")
    (folder / ".gitignore").symlink_to(outside / "created-through-link")
    code, out, err = gradlint(project, "check", ".")
    assert code == 2 and "m.py:1:5: GL001" in out and "not gradlint's" in err
    assert (outside / "precious").read_text() == "keep me\n"
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]


def test_a_symlinked_cache_folder_is_refused(tmp_path, gradlint):
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    outside.mkdir()
    (project / "m.py").write_text(PLAIN)
    (project / CACHE).symlink_to(outside, target_is_directory=True)
    code, _, err = gradlint(project, "check", ".")
    assert code == 2 and "symbolic link" in err
    assert list(outside.iterdir()) == []


def test_cache_dir_flag_and_environment_name_any_folder(tmp_path, gradlint, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "m.py").write_text(PLAIN)
    first = gradlint(project, "check", "--cache-dir", str(tmp_path / "elsewhere"), ".")
    assert first[0] == 1 and list((tmp_path / "elsewhere").glob("*.json"))
    monkeypatch.setenv("GRADLINT_CACHE_DIR", str(tmp_path / "viaenv"))
    assert gradlint(project, "check", ".") == first
    assert list((tmp_path / "viaenv").glob("*.json")) and not (project / CACHE).exists()
    monkeypatch.setenv("GRADLINT_CACHE_DIR", str(project))  # holds the project: refused
    code, _, err = gradlint(project, "check", ".")
    assert code == 2 and "not gradlint's" in err


def test_no_cache_writes_nothing(project, gradlint):
    gradlint(project, "check", "--no-cache", ".")
    assert not (project / CACHE).exists()


def test_stale_cache_temp_files_of_dead_runs_are_removed(project, gradlint):
    import subprocess
    import sys

    gradlint(project, "check", ".")
    [data] = _cache_files(project)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = project / CACHE / f"{data.stem}.{dead}.tmp"
    stale.write_text("{")
    (project / "m.py").write_text(PLAIN + "y = 1\n")  # a change, so that the cache is saved again
    gradlint(project, "check", ".")
    assert not stale.exists()
