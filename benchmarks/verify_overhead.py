"""What the `gradlint verify` checks cost a training step, on the transformer fixture.

    python benchmarks/verify_overhead.py [--device cpu|cuda] [--rounds 10] [--steps 10] [--tracer]
    python benchmarks/verify_overhead.py --fixed [--device cpu|cuda] [--rounds 30] [--steps 30]
    python benchmarks/verify_overhead.py --logging [--device cpu|cuda] [--steps 40]

Pre-LN encoder, d 256 x 4 layers, batch 16 x 64 (the sizes the issue measured), Adam, synthetic data
without padding (so no NaN). Blocks of plain steps and of steps under the checks alternate (the
monitor made and attached as the harness does it: `harness.new_monitor`, `attach_global`, a progress
callback; on CUDA that is the asynchronous read), detached after each block, so that load from other
processes hits both alike; the first step of a monitored block, which finds the root modules, is not
timed. Prints per-step times and the ratio; asserts nothing.

`--fixed`: the checks' fixed cost a step, in microseconds, on the same model at d 32, batch 2 x 16 (the
same modules and parameter tensors, tiny tensors: a 1-5 ms CPU step, launch-bound like a small GPU
step, where a per-step constant shows as a percentage). Also counts what the checks add a step: host
reads (`item`, `bool`, `tolist`, ... on CPU; on CUDA the synchronizing calls that
`torch.cuda.set_sync_debug_mode` reports, and the monitor's own waits), torch ops (kernel launches on
CUDA, from `torch.profiler`), and where the time goes (cProfile of the gradlint functions).

`--logging`: what logging each step's numbers costs, on top of the checks: `gradlint.watch(on_step=...)`
turning each step into metrics (`Health.stats`, `watch.metrics`), and `GradlintCallback` in a real Lightning
`Trainer` logging them through `self.log_dict` at every step (`log_every_n_steps=1`, the worst case) to a
`CSVLogger`. The time spent in that code is clocked around it, step by step, and set against a plain
step of the same model outside Lightning (the stricter denominator).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "fixtures" / "transformer"))

from model import SourceTransformer  # noqa: E402  (the fixture's model)

import gradlint  # noqa: E402
from gradlint.verify.harness import new_monitor  # noqa: E402

GRADLINT = str(Path(gradlint.__file__).parent)  # its code, told apart from torch's and the step's
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")


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


def block(model, optimizer, batch, n, device, clock=time.process_time) -> tuple[float, float]:
    """(wall seconds, CPU seconds by `clock`) a step. On a shared machine the CPU time is the steadier of
    the two (other processes do not count against it); on CUDA only the wall time means anything."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), clock()
    for _ in range(n):
        step(model, optimizer, batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n, (clock() - cpu) / n


def attach(progress):
    """The monitor exactly as `gradlint verify` runs it (the harness's constructor, global hooks, a progress
    line a step); the caller runs the first step (which finds the roots) untimed."""
    monitor = new_monitor(progress=progress)
    monitor.attach_global()
    return monitor


def quartiles(values: list) -> str:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{q[0] * 1e6:.0f}..{q[2] * 1e6:.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, help="10; with --fixed 30")
    p.add_argument("--steps", type=int, help="timed steps per block: 10; with --fixed 30")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--sensors", type=int, default=64)
    p.add_argument("--sources", type=int, default=256)
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--tracer", action="store_true", help="also time one step under the replay tracer")
    p.add_argument("--fixed", action="store_true",
                   help="the fixed cost a step, in microseconds, on a small model (see above)")
    p.add_argument("--logging", action="store_true",
                   help="the per-step cost of logging (watch's on_step, the Lightning callback; see above)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.fixed:
        args.rounds, args.steps = args.rounds or 30, args.steps or 30
        fixed_cost(args, device)
        return
    if args.logging:
        args.steps = args.steps or 40
        logging_cost(args, device)
        return
    args.rounds, args.steps = args.rounds or 10, args.steps or 10
    model, optimizer, batch = make(args, device)
    for _ in range(3):  # warm-up: allocator, kernels, Adam state
        step(model, optimizer, batch)

    progress = open(Path(tempfile.gettempdir()) / "gradlint-overhead.progress", "w", buffering=1)
    plain, checked, ratios, cpu_plain, cpu_checked = [], [], [], [], []
    for _ in range(args.rounds):
        a, a_cpu = block(model, optimizer, batch, args.steps, device)
        monitor = attach(progress)
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
    extra = [b - a for a, b in zip(cpu_plain if device.type == "cpu" else plain,
                                   cpu_checked if device.type == "cpu" else checked)]
    print(f"checked - plain  {statistics.median(extra) * 1e6:+8.0f} us a step (median of per-round differences, "
          f"{'CPU' if device.type == 'cpu' else 'wall'} time; quartiles {quartiles(extra)} us)")

    # The same cost measured piece by piece, which load from other processes disturbs less than a ratio
    # of wall times: the step's one read (grad norms, flags), the root output flag, the activation hooks.
    monitor = attach(open(Path(tempfile.gettempdir()) / "gradlint-overhead.progress", "w", buffering=1))
    step(model, optimizer, batch)
    x, y, mask = batch
    out = model(x, mask)
    ((out - y) ** 2).mean().backward()
    acts = [(tracker.hook(monitor), tracker.name) for tracker in monitor._activations]
    act_inputs = {name: torch.relu(torch.randn_like(out)) for _, name in acts}
    monitor.steps = 2  # activations are looked at on every other step: time a step where they are
    pieces = {
        # the step's read as the step makes it: asynchronous on CUDA (a copy, read once done)
        "grad norms + one read": lambda: monitor._safe_collect(monitor._series_of(optimizer), optimizer),
        "root output flag": lambda: monitor._flag_output(out),
        "activation hooks": lambda: [hook(None, None, act_inputs[name]) for hook, name in acts],
    }
    every = {"activation hooks": 2}  # a step in two
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
        cost = (time.perf_counter() - start) / 20 / every.get(name, 1)
        total += cost
        print(f"  {name:<22} {cost * 1e3:7.3f} ms  {100 * cost / pm:6.3f} % of a plain step"
              + (f" (on one step in {every[name]})" if name in every else ""))
    monitor.flush()
    monitor.detach()
    print(f"  {'sum of the pieces':<22} {total * 1e3:7.3f} ms  {100 * total / pm:6.3f} %")

    if args.tracer:
        from gradlint.verify.trace import Tracer

        tracer = Tracer()
        tracer.arm()
        t, _ = block(model, optimizer, batch, 2, device)
        tracer.disarm()
        print(f"replay tracer   {t * 1e3:8.2f} ms a step ({t / pm:.2f}x a plain step; runs for one step only)")


def small_args(args):
    """The fixture's modules and parameter tensors (as many as at full size), with tiny tensors."""
    small = argparse.Namespace(**vars(args))
    small.d_model, small.batch, small.seq_len, small.sensors, small.sources = 32, 2, 16, 16, 32
    return small


class HostReads:
    """Counts the calls that read a tensor's value on the host (a sync when the tensor is on CUDA) and,
    apart, those made from gradlint's own code, by wrapping the Tensor methods while counting."""

    def __init__(self):
        self.all = collections.Counter()
        self.ours = collections.Counter()
        self._saved = []

    def __enter__(self):
        for name in HOST_READS:
            self._saved.append((name, torch.Tensor.__dict__.get(name)))
            setattr(torch.Tensor, name, self._wrap(name, getattr(torch.Tensor, name)))
        return self

    def _wrap(self, name, original):
        def method(tensor, *args, **kwargs):
            self.all[name] += 1
            code = sys._getframe(1).f_code
            if code.co_filename.startswith(GRADLINT):
                where = f"{Path(code.co_filename).name}:{code.co_name}"
                self.ours[f"{name} of a {tensor.device.type} tensor in {where}"] += 1
            return original(tensor, *args, **kwargs)
        return method

    def __exit__(self, *exc):
        for name, original in self._saved:
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


def op_counts(model, optimizer, batch, n, device) -> collections.Counter:
    """Top-level torch ops a step (an op called by another op is not counted) and, on CUDA, the kernels
    launched ("kernels"), from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(n):
            step(model, optimizer, batch)
    counts: collections.Counter = collections.Counter()
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            counts["kernels"] += 1 / n
            continue
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None:
            counts[event.name[6:]] += 1 / n
    return counts


def fixed_cost(args, device) -> None:
    small = small_args(args)
    if device.type == "cpu" and not args.threads:
        torch.set_num_threads(1)  # a tiny step gains nothing from threads, and they add noise
    model, optimizer, batch = make(small, device)
    rounds, n = args.rounds, args.steps
    progress = open(Path(tempfile.gettempdir()) / "gradlint-overhead.progress", "w", buffering=1)
    # On CPU the thread's CPU time: what the checks cost the step, least disturbed by other processes.
    clock = time.thread_time if device.type == "cpu" else time.perf_counter
    pick = 1 if device.type == "cpu" else 0
    for _ in range(20):
        step(model, optimizer, batch)
    plain, checked, extra, waits = [], [], [], 0
    for _ in range(rounds):
        a = block(model, optimizer, batch, n, device, clock)[pick]
        monitor = attach(progress)
        step(model, optimizer, batch)  # finds the roots: not timed
        waits -= monitor.reads.waits
        b = block(model, optimizer, batch, n, device, clock)[pick]
        waits += monitor.reads.waits
        monitor.flush()
        monitor.detach()
        c = block(model, optimizer, batch, n, device, clock)[pick]
        plain.append((a + c) / 2)
        checked.append(b)
        extra.append(b - (a + c) / 2)  # against the plain blocks either side: slow drifts cancel
    pm, fixed = statistics.median(plain), statistics.median(extra)
    print(f"fixed cost a step: device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"the fixture at d {small.d_model} x {small.layers} layers, batch {small.batch} x {small.seq_len} "
          f"({sum(1 for _ in model.parameters())} parameter tensors, {sum(1 for _ in model.modules())} modules)")
    kind = "thread CPU" if device.type == "cpu" else "wall"
    print(f"plain step      {pm * 1e6:8.0f} us  ({kind} time, median of {rounds} rounds of {n} steps)")
    print(f"checked step    {statistics.median(checked) * 1e6:8.0f} us")
    print(f"fixed cost      {fixed * 1e6:8.1f} us a step  ({100 * fixed / pm:.2f} % of this step; quartiles "
          f"{quartiles(extra)} us)")
    if device.type == "cuda":
        print(f"monitor waits   {waits / (rounds * n):8.3f} a step  (reads that had to wait for the device)")

    # What the checks add a step, counted: host reads, torch ops.
    def counted(checked_: bool, fn):
        monitor = attach(progress) if checked_ else None
        step(model, optimizer, batch)
        try:
            return fn()
        finally:
            if monitor is not None:
                monitor.flush()
                monitor.detach()

    def reads():
        with HostReads() as counter:
            for _ in range(n):
                step(model, optimizer, batch)
        return counter

    plain_reads, checked_reads = counted(False, reads), counted(True, reads)
    added = sum(checked_reads.all.values()) - sum(plain_reads.all.values())
    ours = ", ".join(f"{k} {v / n:g}" for k, v in sorted(checked_reads.ours.items())) or "none"
    print(f"host reads      {added / n:+8.2f} a step  (item/bool/tolist/float/int/numpy; the step itself makes "
          f"{sum(plain_reads.all.values()) / n:g}); by gradlint: {ours}")
    if device.type == "cpu":
        print("                (on CPU the step's values are read with one tolist; on CUDA the harness copies "
              "them to pinned memory instead, and reads them once the copy's event is done)")
    else:
        def syncs():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    for _ in range(n):
                        step(model, optimizer, batch)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            return [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]

        plain_syncs, checked_syncs = counted(False, syncs), counted(True, syncs)
        print(f"CUDA syncs      {(len(checked_syncs) - len(plain_syncs)) / n:+8.2f} a step  "
              f"(set_sync_debug_mode; the step itself makes {len(plain_syncs) / n:g})")
        for text, count in collections.Counter(checked_syncs).most_common(3):
            print(f"                {count / n:g} a step: {text[:100]}")
    plain_ops = counted(False, lambda: op_counts(model, optimizer, batch, n, device))
    checked_ops = counted(True, lambda: op_counts(model, optimizer, batch, n, device))
    kernels = checked_ops.pop("kernels", 0) - plain_ops.pop("kernels", 0)
    more = {k: round(checked_ops[k] - plain_ops.get(k, 0), 2) for k in checked_ops}
    more = {k: v for k, v in more.items() if v}
    print(f"torch ops       {sum(more.values()):+8.2f} a step  (top-level: "
          + ", ".join(f"{k} {v:+g}" for k, v in sorted(more.items(), key=lambda kv: -kv[1])) + ")")
    if device.type == "cuda":
        print(f"CUDA kernels    {kernels:+8.2f} a step")

    # Where the time goes: the gradlint functions a step, from cProfile (which inflates Python-heavy code).
    monitor = attach(progress)
    step(model, optimizer, batch)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        step(model, optimizer, batch)
    profiler.disable()
    monitor.flush()
    monitor.detach()
    stats = pstats.Stats(profiler).stats
    rows = []
    for (file, _line, name), (_, calls, own, cumulative, callers) in stats.items():
        called_by_us = [c for c in callers if c[0].startswith(GRADLINT)]
        if file.startswith(GRADLINT):
            # The wrappers in patches.py run the user's call (backward, clipping) inside: their own time only.
            label = f"{Path(file).name}:{name}" + (" (own time)" if file.endswith("patches.py") else "")
            rows.append(((own if file.endswith("patches.py") else cumulative) / n, calls / n, label))
        elif called_by_us and file == "~":  # a torch call made by gradlint
            rows.append((sum(callers[c][3] for c in called_by_us) / n, calls / n, f"{name} (from gradlint)"))
    print("where it goes (cProfile, us a step, cumulative; profiling inflates Python code):")
    for cost, calls, label in sorted(rows, reverse=True)[:16]:
        print(f"  {cost * 1e6:8.1f} us  {calls:5.1f} calls  {label}")
    progress.close()


class Clock:
    """Seconds spent inside the wrapped callables, and how many calls."""

    def __init__(self):
        self.seconds, self.calls = 0.0, 0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1
        return timed


def logging_cost(args, device) -> None:
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from gradlint.lightning import GradlintCallback
    from gradlint.verify import watch as watch_module

    model, optimizer, batch = make(args, device)
    for _ in range(3):
        step(model, optimizer, batch)
    plain, _ = block(model, optimizer, batch, 10, device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, d {args.d_model} x "
          f"{args.layers} layers, batch {args.batch} x {args.seq_len}: plain step {plain * 1e3:.2f} ms")

    # watch(on_step=...): each step's numbers as metrics, handed to a sink (the user's logger)
    clock, sink = Clock(), []
    to_metrics = clock.wrap(lambda stats: sink.append(watch_module.metrics(stats)))
    with gradlint.watch(model, optimizer, on_step=to_metrics) as health:
        health.stats = clock.wrap(health.stats)
        for _ in range(args.steps):
            step(model, optimizer, batch)
    per_step = clock.seconds / max(1, len(sink))
    print(f"watch on_step     {per_step * 1e6:8.1f} us a step  ({100 * per_step / plain:.3f} % of a plain step; "
          f"{len(sink[-1])} metrics a step)")

    # the Lightning callback, logging every step through self.log_dict to a CSVLogger
    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def training_step(self, batch_, index):
            x, y, mask = batch_
            pred = self.model(x, mask)
            return ((pred - y) ** 2 * mask[..., None]).sum() / mask.sum()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-4)

    timed = Clock()

    class Timed(GradlintCallback):
        def on_fit_start(self, trainer, pl_module):
            super().on_fit_start(trainer, pl_module)
            self.health.stats = timed.wrap(self.health.stats)

        def on_train_batch_end(self, *a):
            return timed.wrap(super().on_train_batch_end)(*a)

    x, y, mask = batch
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.cpu(), y.cpu(), mask.cpu()),
                                         batch_size=len(x))
    callback = Timed(print_summary=False)
    with tempfile.TemporaryDirectory() as logs, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = L.Trainer(max_epochs=args.steps, log_every_n_steps=1, logger=CSVLogger(logs), callbacks=[callback],
                            accelerator=device.type, devices=1, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False)
        trainer.fit(Module(), loader)
        columns = (Path(logs) / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    steps = trainer.global_step
    per_step = timed.seconds / max(1, steps)
    print(f"Lightning logging {per_step * 1e6:8.1f} us a step  ({100 * per_step / plain:.3f} % of a plain step; "
          f"{steps} steps logged to a CSVLogger, {columns.count('gradlint/')} gradlint columns)")


if __name__ == "__main__":
    main()
