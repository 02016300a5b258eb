"""TEST SHIM (gradlint benchmarks): a tiny stand-in for torchvision, not the real package."""
from . import datasets, transforms, utils  # noqa: F401
