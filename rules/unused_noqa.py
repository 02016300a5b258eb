from __future__ import annotations

from gradlint.rule import Invalid, Rule, Valid


class UnusedNoqa(Rule):
    """
    ## What it does
    Finds gradlint codes in `# noqa` comments that silence nothing: the rule did not report on that line
    (`unused`), the rule is not selected (`non-enabled`), or the code is listed twice (`duplicated`).
    Ruff's `RUF100`, for gradlint's codes.

    Codes gradlint does not know (`E501`, `F401`, another linter's) and bare `# noqa` comments are left
    alone: ruff, flake8 and gradlint read the same comments, and a directive gradlint has no use for may be
    another linter's. File-level `# gradlint: noqa` directives are not checked.

    Off by default: select it with `--extend-select GL100` or `extend-select = ["GL100"]`.

    ## Why is this bad?
    A `# noqa: GL001` left behind after the code was fixed (or the finding moved) silences the next real
    finding on that line without anyone deciding it should.

    ## Example
    ```python
    x = F.normalize(x, dim=-1, eps=1e-6)  # noqa: GL001
    ```

    ## Use instead
    ```python
    x = F.normalize(x, dim=-1, eps=1e-6)
    ```

    ## Fix safety
    Safe: the fix removes the unused codes, or the whole comment (with the words after the codes, up to
    a next `#` comment, which it keeps) when none is left. Comments never change what code does.
    """

    code = "GL100"
    name = "unused-noqa"
    summary = "A `# noqa` code that silences nothing (off by default)"
    triggers = (r"(?i)noqa",)
    default_enabled = False
    audits_noqa = True
    fix_message = "Remove unused `noqa` directive"

    @staticmethod
    def message(details: str) -> str:
        return f"Unused `noqa` directive ({details})"

    VALID = [
        Valid("import torch\n\nx = torch.ones(3)  # noqa: E501\n", note="another linter's code"),
        Valid("import torch\n\nx = torch.ones(3)  # noqa\n", note="a bare noqa may be another linter's"),
        Valid('text = "x = 1  # noqa: GL001"\n', note="not a comment"),
    ]
    INVALID = [
        Invalid("x = 1  # noqa: GL001\n", expected="x = 1\n", note="GL001 not selected: non-enabled"),
        Invalid("x = 1  # noqa: E501, GL001, GL001\n", expected="x = 1  # noqa: E501\n"),
        Invalid("x = 1  # noqa: GL001 the reason  # type: ignore\n", expected="x = 1  # type: ignore\n"),
        Invalid("# a comment # noqa: GL002\nx = 1\n", expected="# a comment\nx = 1\n"),
    ]
