"""The step's one read from the device. On CUDA (`async_read`, as the harness runs) the step's vector goes to
pinned memory by one non-blocking copy and is read when its event says the copy is done, a step or more later:
no host sync in the default path; the device may run up to `IN_FLIGHT` steps behind before the read waits.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional

import torch

IN_FLIGHT = 4  # CUDA reads not yet done, at most: then the oldest is waited for (bounded memory)


def one_vector(norms: list) -> Optional[torch.Tensor]:
    """On CUDA `_foreach_norm` writes all the norms into one buffer and returns a 0-d view of each element:
    that buffer as one vector, instead of stacking the views (a tensor made per parameter, a cost that grows
    with the parameter count). None where the norms are tensors of their own (CPU; mixed dtypes)."""
    first, size, n = norms[0], norms[0].element_size(), len(norms)
    start = first.data_ptr()
    if norms[-1].data_ptr() - start != (n - 1) * size:  # the quick test, which CPU norms fail
        return None
    if [t.data_ptr() for t in norms] != list(range(start, start + n * size, size)):
        return None
    try:  # and the N elements must lie in the first one's storage: then they are the N norms, in order
        return first.as_strided((n,), (1,))
    except RuntimeError:
        return None


class DeviceReads:
    def __init__(self, finish: Callable[[tuple, list], None]):
        self.finish = finish  # called with (meta, values) in step order
        self.async_read = False
        self.in_flight: deque = deque()  # (meta, pinned host view, slot) in step order
        self.slots: list = []  # free (pinned buffer, event, device) to reuse: no allocation per step
        self.waits = 0  # reads that had to wait for the device (the benchmark reports them)

    def later(self, meta: tuple, pack: torch.Tensor) -> None:
        """CUDA: one non-blocking copy into pinned memory, and an event to tell when it is done."""
        n = pack.numel()
        slot = self.slots.pop() if self.slots else None
        if slot is None or slot[0].numel() < n or slot[2] != pack.device:
            slot = (torch.empty(max(n, 64), dtype=torch.float32, pin_memory=True), torch.cuda.Event(), pack.device)
        host = slot[0][:n]
        host.copy_(pack, non_blocking=True)
        slot[1].record(torch.cuda.current_stream(pack.device))  # the stream the copy was queued on
        self.in_flight.append((meta, host, slot))

    def done(self, wait: bool = False) -> None:
        """Read the copies that are done (`event.query()` does not wait); with `wait`, all of them; and the
        oldest when `IN_FLIGHT` are pending."""
        in_flight = self.in_flight
        while in_flight:
            meta, host, slot = in_flight[0]
            if not slot[1].query():
                if not (wait or len(in_flight) >= IN_FLIGHT):
                    return
                self.waits += 1
                slot[1].synchronize()
            in_flight.popleft()
            self.slots.append(slot)
            self.finish(meta, host.tolist())

