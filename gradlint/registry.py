"""Every rule is a module of `gradlint.rules` (the top-level `rules/` folder): adding a rule is adding a file."""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from .rule import Rule


@lru_cache(maxsize=None)
def every_rule() -> tuple[type[Rule], ...]:
    """Every rule, by code: those on by default and those that run only when selected (GL100)."""
    from . import rules as package

    found: dict[str, type[Rule]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Rule) and value.code
                    and value.__module__ == module.__name__):
                if value.code in found and found[value.code] is not value:
                    raise RuntimeError(f"two rules claim {value.code}: {found[value.code].__name__}, {value.__name__}")
                found[value.code] = value
    return tuple(found[code] for code in sorted(found))


@lru_cache(maxsize=None)
def all_rules() -> tuple[type[Rule], ...]:
    """The rules on by default: what `select` (default ALL) chooses from. Rules with
    `default_enabled = False` join once selection takes `every_rule()` and enables only those by default."""
    return tuple(rule for rule in every_rule() if rule.default_enabled)


def rule_by_code_or_name(key: str) -> type[Rule] | None:
    key_upper = key.upper()
    for rule in every_rule():
        if rule.code == key_upper or rule.name == key:
            return rule
    return None
