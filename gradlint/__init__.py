"""gradlint: find, fix and prove numerical-stability mistakes in PyTorch training code.

`import gradlint` stays light: the static side never imports torch, and the runtime API
(`gradlint.watch`) loads it only when asked for.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "watch"]


def __getattr__(name):
    if name == "watch":
        from .verify.watch import watch

        return watch
    raise AttributeError(f"module 'gradlint' has no attribute {name!r}")
