"""`gradlint verify`: run training code, original and fixed, with cheap health checks, and compare.

This package is the only part of gradlint that imports torch, and only in the modules that run next to
the user's code (`harness`, `monitor`, `trace`, `watch`, `lightning`, `rankdata`, `gather`). `command`,
`patch`, `runner`, `checks`, `report`, `html`, and for distributed runs `merge`, `rankchecks` and
`distributed_options` stay torch-free, so `gradlint verify --help` works without it; `instrument` and
`children` import it only when they start checking a process.
"""
