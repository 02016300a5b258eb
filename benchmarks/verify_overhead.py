"""What the `gradlint verify` checks cost a training step, on the transformer fixture.

    python benchmarks/verify_overhead.py [--device cpu|cuda] [--rounds 10] [--steps 10] [--tracer]

Pre-LN encoder, d 256 x 4 layers, batch 16 x 64 (the sizes the issue measured), Adam, synthetic data
without padding (so no NaN). Blocks of plain steps and of steps under the checks alternate (the
monitor attached as the harness attaches it, globally, and detached after each block), so that load
from other processes hits both alike; the first step of a monitored block, which finds the root
modules, is not timed. Prints per-step times and the ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "fixtures" / "transformer"))

from model import SourceTransformer  # noqa: E402  (the fixture's model)

from gradlint.verify.monitor import Monitor  # noqa: E402


def make(args, device):
    torch.manual_seed(0)
    model = SourceTransformer(args.sensors, args.sources, args.seq_len, d_model=args.d_model, n_heads=8,
                              n_layers=args.layers).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, args.seq_len, args.sensors, device=device)
    y = torch.randn(args.batch, args.seq_len, args.sources, device=device)
    mask = torch.ones(args.batch, args.seq_len, dtype=torch.bool, device=device)
    return model, optimizer, (x, y, mask)


def step(model, optimizer, batch):
    x, y, mask = batch
    pred = model(x, mask)
    loss = ((pred - y) ** 2 * mask[..., None]).sum() / mask.sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()  # noqa: GL005 (the plain step the overhead is measured against)


def block(model, optimizer, batch, n, device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) a step. On a shared machine the CPU time is the steadier of the
    two (other processes do not count against it); on CUDA only the wall time means anything."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        step(model, optimizer, batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n, (time.process_time() - cpu) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps", type=int, default=10, help="timed steps per block")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--sensors", type=int, default=64)
    p.add_argument("--sources", type=int, default=256)
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--tracer", action="store_true", help="also time one step under the replay tracer")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, optimizer, batch = make(args, device)
    for _ in range(3):  # warm-up: allocator, kernels, Adam state
        step(model, optimizer, batch)

    progress = open(Path(tempfile.gettempdir()) / "gradlint-overhead.progress", "w", buffering=1)
    plain, checked, ratios, cpu_plain, cpu_checked = [], [], [], [], []
    for _ in range(args.rounds):
        a, a_cpu = block(model, optimizer, batch, args.steps, device)
        monitor = Monitor()
        monitor.on_step_end.append(lambda m: progress.write(f"{m.steps}\n"))  # as the harness does
        monitor.async_read = True  # as the harness does
        monitor.attach_global()
        step(model, optimizer, batch)  # finds the roots (global module hooks): not timed
        b, b_cpu = block(model, optimizer, batch, args.steps, device)
        monitor.flush()
        monitor.detach()
        plain.append(a)
        checked.append(b)
        ratios.append(b / a)
        cpu_plain.append(a_cpu)
        cpu_checked.append(b_cpu)
    progress.close()
    pm, cm = statistics.median(plain), statistics.median(checked)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"d {args.d_model} x {args.layers} layers, batch {args.batch} x {args.seq_len}")
    print(f"plain step      {pm * 1e3:8.2f} ms  (median of {args.rounds} blocks of {args.steps})")
    print(f"checked step    {cm * 1e3:8.2f} ms")
    print(f"ratio           {cm / pm:8.4f}  (median of per-round ratios {statistics.median(ratios):.4f}; "
          f"overhead {100 * (statistics.median(ratios) - 1):+.2f} %)")
    print(f"fastest blocks  {min(plain) * 1e3:8.2f} ms plain, {min(checked) * 1e3:.2f} ms checked: ratio "
          f"{min(checked) / min(plain):.4f} (the least disturbed by other processes)")
    print(f"per-round ratios: {' '.join(f'{r:.3f}' for r in ratios)}")
    if device.type == "cpu":
        cp, cc = statistics.median(cpu_plain), statistics.median(cpu_checked)
        print(f"process CPU time {cp * 1e3:7.2f} ms plain, {cc * 1e3:.2f} ms checked: ratio {cc / cp:.4f} "
              f"(overhead {100 * (cc / cp - 1):+.2f} %; the steadiest measure on a shared machine)")

    # The same cost measured piece by piece, which load from other processes disturbs less than a ratio
    # of wall times: the step's one read (grad norms, flags), the root output flag, the activation hooks.
    monitor = Monitor()
    monitor.attach_global()
    step(model, optimizer, batch)
    x, y, mask = batch
    out = model(x, mask)
    ((out - y) ** 2).mean().backward()
    acts = [(tracker.hook(monitor), tracker.name) for tracker in monitor._activations]
    act_inputs = {name: torch.relu(torch.randn_like(out)) for _, name in acts}
    pieces = {
        "grad norms + one read": lambda: monitor._collect(optimizer),
        "root output flag": lambda: monitor._flag_output(out),
        "activation hooks": lambda: [hook(None, None, act_inputs[name]) for hook, name in acts],
    }
    total = 0.0
    for name, fn in pieces.items():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(20):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        cost = (time.perf_counter() - start) / 20
        total += cost
        print(f"  {name:<22} {cost * 1e3:7.3f} ms  {100 * cost / pm:6.3f} % of a plain step")
    monitor.detach()
    print(f"  {'sum of the pieces':<22} {total * 1e3:7.3f} ms  {100 * total / pm:6.3f} %")

    if args.tracer:
        from gradlint.verify.trace import Tracer

        tracer = Tracer()
        tracer.arm()
        t, _ = block(model, optimizer, batch, 2, device)
        tracer.disarm()
        print(f"replay tracer   {t * 1e3:8.2f} ms a step ({t / pm:.2f}x a plain step; runs for one step only)")


if __name__ == "__main__":
    main()
