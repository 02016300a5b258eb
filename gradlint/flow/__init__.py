"""Training-loop analysis for GL004–GL007, in four steps that each live in one module:

- ``events``: what a routine does, in statement order (backward, step, clip, `.eval()`/`.train()`, calls,
  assignments), each event placed in its loops, branches and `no_grad` blocks, plus a small control-flow
  skeleton. Syntax only.
- ``calls``: the routines and classes of the file, which routine a call runs, its call sites (`Analysis`,
  the per-file hub the rules share).
- ``facts``: the binder. What an object is (a module, an optimizer, a scaler, an engine...) from what it
  is bound to and how the code uses it, never from its name.
- ``modes``: values along every path: the modes a module can be in before an event or after a routine,
  and the training a routine runs.

``apis`` holds what is known about the libraries (which torch.nn classes depend on the mode, which
factories build models); ``base`` is what the rules share (the walk that hands them routines).
A rule asks questions ("is this a module, can it be in train mode here?") and stays silent, or makes its
fix unsafe, where the facts do not say.
"""

from .base import RoutineRule
from .calls import Analysis, analysis

__all__ = ["Analysis", "RoutineRule", "analysis"]
