"""A rule option outside its valid range is a configuration error the user sees before anything runs."""

from __future__ import annotations

import pytest

from gradlint.registry import all_rules

DEFECT = "import torch\n\n\ndef f(x):\n    return x / x.norm(dim=-1, keepdim=True)\n"


def _run(tmp_path, gradlint, table: str, body: str):
    (tmp_path / "pyproject.toml").write_text(f"[tool.gradlint.{table}]\n{body}\n")
    (tmp_path / "m.py").write_text(DEFECT)
    return gradlint(tmp_path, "fix", "--write", ".")


@pytest.mark.parametrize("value, says", [
    ("nan", "must be a finite number, not nan"),
    ("inf", "must be a finite number, not inf"),
    ("-inf", "must be a finite number, not -inf"),
    ("0", "must be > 0 and < 1, not 0"),
    ("-1e-6", "must be > 0 and < 1, not -1e-06"),
    ("1.5", "must be > 0 and < 1, not 1.5"),
    ('"small"', "must be a number, like 1e-06"),
    ("true", "must be a number"),
])
def test_eps_out_of_range_is_a_usage_error_and_nothing_is_written(tmp_path, gradlint, value, says):
    code, out, err = _run(tmp_path, gradlint, "unguarded-norm-division", f"eps = {value}")
    assert code == 2
    assert f"`unguarded-norm-division.eps` {says}" in err
    assert (tmp_path / "m.py").read_text() == DEFECT


@pytest.mark.parametrize("body, says", [
    ("bound = 0", "`unclamped-einsum-chain.bound` must be > 0, not 0"),
    ("bound = nan", "`unclamped-einsum-chain.bound` must be a finite number, not nan"),
    ("min-factors = 1", "`unclamped-einsum-chain.min-factors` must be >= 2, not 1"),
    ("min-factors = 2.5", "`unclamped-einsum-chain.min-factors` must be a whole number, not 2.5"),
])
def test_other_numeric_options_are_checked_the_same_way(tmp_path, gradlint, body, says):
    code, _, err = _run(tmp_path, gradlint, "unclamped-einsum-chain", body)
    assert code == 2 and says in err


def test_a_valid_value_is_used(tmp_path, gradlint):
    code, _, _ = _run(tmp_path, gradlint, "unguarded-norm-division", "eps = 1e-4")
    assert code == 0
    assert "eps=0.0001" in (tmp_path / "m.py").read_text()


def test_every_default_is_valid():
    for rule in all_rules():
        for option in rule.options:
            assert option.problem(option.default) is None, (rule.code, option.name)
