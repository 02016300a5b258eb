"""`from gradlint.lightning import GradlintCallback`: the verify checks as a PyTorch Lightning callback (see
`gradlint.verify.lightning`). Importing this module imports torch and Lightning; `import gradlint` does not."""

from .verify.lightning import GradlintCallback, NonFiniteError, NonFiniteWarning

__all__ = ["GradlintCallback", "NonFiniteError", "NonFiniteWarning"]
