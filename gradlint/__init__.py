"""gradlint: find, fix and prove numerical-stability mistakes in PyTorch training code.

`import gradlint` stays light: the static side never imports torch, and the runtime API
(`gradlint.watch`) loads it only when asked for.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "watch"]


def __getattr__(name):
    if name == "watch":
        try:
            from .verify.watch import watch
        except ModuleNotFoundError as error:
            if error.name != "torch":
                raise
            raise ImportError("gradlint.watch needs PyTorch, which the runtime checks run on: "
                              "pip install 'gradlint[verify]'") from error
        return watch
    raise AttributeError(f"module 'gradlint' has no attribute {name!r}")
