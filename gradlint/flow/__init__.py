"""Training-loop analysis for GL004–GL007. Each module holds one step of it:

- ``events``: what a routine does, as data: events (backward, step, clip, `.eval()`/`.train()`, calls,
  assignments, exits) in execution order, placed in their loops, branches and `no_grad` blocks, and a small
  control-flow skeleton; ``collect`` is the walk that builds them from a routine's statements. Syntax only.
- ``calls``: the routines and classes of the file, which routine a call runs, its call sites (`Analysis`,
  the per-file hub the rules share); ``outline`` answers the same about classes from the whole file's `ast`
  when only some regions were parsed.
- ``facts`` (with ``values``, ``usage`` and ``kinds``): the binder. What an object is (a module, an
  optimizer, a scaler, an engine...) from what it is bound to and how the code uses it, never from its name.
- ``modes``: values along every path: the modes a module can be in before an event or after a routine,
  and the training a routine runs; ``grads``: whether the gradients a step applies are scaled or clipped.
- ``settings``: the options and parameters a file declares (`--clip-grad`) and whether anything reads them.
- ``forwards``: which calls run a module's forward, and whether a loop's data reaches them.

``apis`` holds what is known about the libraries (which torch.nn classes depend on the mode, which
factories build models); ``base`` is what the rules share (the walk that hands them routines).
A rule asks questions ("is this a module, can it be in train mode here?") and stays silent, or makes its
fix unsafe, where the facts do not say.
"""

from .base import RoutineRule
from .calls import Analysis, analysis

__all__ = ["Analysis", "RoutineRule", "analysis"]
