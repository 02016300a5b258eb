"""`gradlint verify`: run training code, original and fixed, with cheap health checks, and compare.

This package is the only part of gradlint that imports torch, and only in the modules that run next to
the user's code (`harness`, `monitor`, `trace`, `watch`, `lightning`). `command`, `patch`, `runner`,
`checks`, `report` and `html` stay torch-free, so `gradlint verify --help` works without it.
"""
