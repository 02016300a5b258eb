"""What an object of a training file can be, and the record the binder keeps about one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

MODULE, OPTIMIZER, SCHEDULER, SCALER = "module", "optimizer", "scheduler", "scaler"
ACCELERATOR, FABRIC, ENGINE, LOADER = "accelerator", "fabric", "engine", "loader"
ROUTINE, OTHER = "routine", "other"  # a function or class of this file; an object known not to be any above


@dataclass(frozen=True)
class Fact:
    kind: Optional[str] = None
    mode: Optional[str] = None  # a module's mode where it is built: 'train', 'eval' or 'unknown'
    frozen: bool = False  # `.requires_grad_(False)` on it where it is built
    mode_dependent: Optional[bool] = None  # does its forward depend on the mode (None: cannot tell)
    fsdp1: bool = False  # wrapped by FullyShardedDataParallel (clip with `model.clip_grad_norm_`)
    language_model: bool = False  # a transformers language model (its recipes clip gradients)
    built: bool = False  # its construction is in this file (so is any wrapper around it: FSDP, DDP)
    how: str = ""  # the evidence, in words
    elements: tuple = ()  # for a tuple a call returns: the Fact of each element

    @property
    def module(self) -> bool:
        return self.kind == MODULE


UNKNOWN = Fact()


def merge(facts: list) -> Fact:
    """One Fact for a key bound several times: the kind all known bindings agree on."""
    known = [f for f in facts if f.kind is not None]
    if not known:
        return UNKNOWN
    kinds = {f.kind for f in known}
    if len(kinds) != 1:
        return UNKNOWN
    first = known[0]
    modes = {f.mode for f in known}
    dependent = {f.mode_dependent for f in known}
    return replace(first, mode=modes.pop() if len(modes) == 1 else "unknown",
                   frozen=all(f.frozen for f in known),
                   mode_dependent=True if True in dependent else (False if dependent == {False} else None),
                   fsdp1=any(f.fsdp1 for f in known), language_model=any(f.language_model for f in known),
                   built=all(f.built for f in known))




@dataclass(frozen=True)
class ClassFact:
    kind: Optional[str]  # MODULE, OPTIMIZER, OTHER (a plain class), or None (a base we cannot see)
    lightning: bool = False
    trainer: bool = False  # derives from the HF Trainer
    mode_dependent: Optional[bool] = None
