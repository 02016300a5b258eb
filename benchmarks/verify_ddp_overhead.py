"""What the distributed checks of `gradlint verify --nproc-per-node` add to a DDP training step on CPU.

    python benchmarks/verify_ddp_overhead.py [--rounds 8] [--steps 10] [--every 10] [--d-model 128]

Two ranks (gloo, one thread each), the transformer fixture's model wrapped in DistributedDataParallel,
Adam, synthetic data. Per rank, blocks of steps alternate, in the same order on both ranks:
- plain: the DDP step alone;
- monitor: the checks as `gradlint verify` runs them for one process (issue 10's monitor, for scale);
- distributed: the monitor and what a rank records for the cross-rank checks (`rankdata.RankData`: a
  modulo a step, a parameter checksum every `--every` steps).
The first step of a checked block (it finds the root modules) is not timed. Time is CPU time of the rank
(`time.process_time`: on a shared machine other processes do not count against it), medians over rounds.

The block difference is noisy at this size, so the distributed checks' cost is also timed directly: their
per-step callback, called as a run calls it (a checksum every `--every` calls), in microseconds a step.
Collectives called from Python (`torch.distributed.*`: all_reduce, all_gather, broadcast, barrier, ...)
are counted in every block: the checks must add none (DDP's own all-reduce runs in C++ and is not counted
here in any block). Prints the numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "fixtures" / "transformer"))

from model import SourceTransformer  # noqa: E402  (the fixture's model)

from gradlint.verify.instrument import new_monitor  # noqa: E402
from gradlint.verify.rankdata import RankData  # noqa: E402

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "broadcast", "broadcast_object_list", "barrier",
               "reduce", "gather", "scatter", "all_to_all", "reduce_scatter", "send", "recv")


def _count_collectives(counter: dict) -> None:
    for name in COLLECTIVES:
        original = getattr(dist, name, None)
        if original is None:
            continue

        def counted(*args, __original=original, **kwargs):
            counter["calls"] += 1
            return __original(*args, **kwargs)

        setattr(dist, name, counted)


def _step(model, optimizer, batch) -> None:
    x, y, mask = batch
    loss = ((model(x, mask) - y) ** 2 * mask[..., None]).sum() / mask.sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()  # noqa: GL005 (the plain step the overhead is measured against)


def _block(model, optimizer, batch, n: int, counter: dict) -> tuple[float, int]:
    calls = counter["calls"]
    start = time.process_time()
    for _ in range(n):
        _step(model, optimizer, batch)
    return (time.process_time() - start) / n, counter["calls"] - calls


def _rank(rank: int, port: int, args, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    counter = {"calls": 0}
    _count_collectives(counter)
    torch.manual_seed(0)
    model = DDP(SourceTransformer(args.sensors, args.sources, args.seq_len, d_model=args.d_model, n_heads=4,
                                  n_layers=args.layers))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(rank)
    batch = (torch.randn(args.batch, args.seq_len, args.sensors, generator=generator),
             torch.randn(args.batch, args.seq_len, args.sources, generator=generator),
             torch.ones(args.batch, args.seq_len, dtype=torch.bool))
    for _ in range(3):
        _step(model, optimizer, batch)
    progress = open(os.path.join(tempfile.gettempdir(), f"gradlint-ddp-overhead.{rank}"), "w", buffering=1)
    times: dict[str, list] = {"plain": [], "monitor": [], "distributed": []}
    calls: dict[str, int] = {k: 0 for k in times}
    for round_ in range(args.rounds):
        order = ["plain", "monitor", "distributed"]
        order = order[round_ % 3:] + order[:round_ % 3]  # the same rotation on both ranks: lockstep
        for mode in order:
            monitor = rank_data = None
            if mode != "plain":
                monitor = new_monitor(progress=progress)
                monitor.attach_global()
                if mode == "distributed":
                    rank_data = RankData(monitor, every=args.every)
                    rank_data.attach()
                _step(model, optimizer, batch)  # finds the roots: not timed
            seconds, collective_calls = _block(model, optimizer, batch, args.steps, counter)
            times[mode].append(seconds)
            calls[mode] += collective_calls
            if monitor is not None:
                monitor.flush()
                monitor.detach()
            if rank_data is not None:
                rank_data.detach()
    direct = _direct(model, optimizer, batch, args, progress)  # on both ranks: its one step all-reduces
    progress.close()
    if rank == 0:
        with open(out, "w") as f:
            import json

            json.dump({"times": times, "calls": calls, "direct": direct,
                       "parameters": sum(p.numel() for p in model.parameters()),
                       "tensors": len(list(model.parameters()))}, f)
    dist.barrier()
    dist.destroy_process_group()


def _direct(model, optimizer, batch, args, progress) -> dict:
    """The distributed checks' per-step callback alone, as a run calls it: microseconds a step."""
    monitor = new_monitor(progress=progress)
    monitor.attach_global()
    rank_data = RankData(monitor, every=args.every)
    rank_data.attach()
    _step(model, optimizer, batch)  # finds the roots and the DDP parameters
    monitor.flush()
    monitor.detach()
    calls = 2000
    start = time.process_time()
    for i in range(calls):
        monitor.steps = i + 2
        rank_data._on_step(monitor)
    per_step = (time.process_time() - start) / calls
    checksums = len(rank_data.checksums)
    start = time.process_time()
    for _ in range(200):
        rank_data._checksum(0)
    checksum = (time.process_time() - start) / 200
    rank_data.detach()
    return {"per_step": per_step, "checksum": checksum, "checksums": checksums, "calls": calls,
            "synced": len(rank_data.synced)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed steps per block")
    p.add_argument("--every", type=int, default=10, help="steps between two parameter checksums")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--sensors", type=int, default=32)
    p.add_argument("--sources", type=int, default=128)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = os.path.join(tempfile.mkdtemp(prefix="gradlint-ddp-overhead-"), "result.json")
    mp.spawn(_rank, args=(port, args, out), nprocs=2)
    import json

    with open(out) as f:
        result = json.load(f)
    median = {k: statistics.median(v) for k, v in result["times"].items()}
    plain = median["plain"]
    direct = result["direct"]
    print(f"torch {torch.__version__}, 2 ranks, gloo, CPU, 1 thread each; SourceTransformer d {args.d_model} x "
          f"{args.layers} layers ({result['parameters']:,} parameters in {result['tensors']} tensors), batch "
          f"{args.batch} x {args.seq_len}; {args.rounds} rounds of {args.steps} steps, rank 0's CPU time")
    print(f"DDP step, plain:                         {plain * 1e3:8.2f} ms")
    print(f"with the monitor (one process's checks): {median['monitor'] * 1e3:8.2f} ms  "
          f"({(median['monitor'] / plain - 1) * 100:+.2f} %)")
    print(f"with the distributed checks too:         {median['distributed'] * 1e3:8.2f} ms  "
          f"({(median['distributed'] / plain - 1) * 100:+.2f} %; over the monitor alone: "
          f"{(median['distributed'] / median['monitor'] - 1) * 100:+.2f} %, within the noise)")
    print(f"the distributed checks' per-step callback, timed alone: {direct['per_step'] * 1e6:.2f} us a step "
          f"(a checksum of {direct['synced']} parameters, {direct['checksum'] * 1e6:.0f} us, every {args.every} "
          f"steps) = {direct['per_step'] / plain * 100:.3f} % of the plain DDP step")
    print("collectives called from Python in the timed blocks: " +
          ", ".join(f"{k} {v}" for k, v in result["calls"].items()))


if __name__ == "__main__":
    main()
