"""`gradlint verify` on distributed training, end to end on CPU with gloo: `--nproc-per-node 2` (torchrun) on the
DDP fixture, a rank that crashes, scripts that start their own workers (`mp.spawn`, `mp.Process`), and the
fixture on CUDA when there is a GPU. Each run starts a group of processes that import torch: a few small
runs, each read by several asserts.

The defects are on purpose: `# noqa` keeps `gradlint fix --write .` on this repository from fixing them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover - a torch built without it
    pytest.skip("torch.distributed is not available", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "ddp"


def verify(*args, cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("gradlint")
    cli = [str(script), "verify"] if script.exists() else [sys.executable, "-m", "gradlint.verify.command"]
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1")
    return subprocess.run([*cli, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def result_of(proc: subprocess.CompletedProcess) -> dict:
    assert proc.stdout.startswith("{"), proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def checks(run: dict) -> dict:
    return {c["key"]: c for c in run["checks"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_in(folder: Path) -> list[str]:
    """Processes still running in `folder` (what a run left behind)."""
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == folder.resolve():
                    left.append((entry / "cmdline").read_text().replace("\0", " "))
            except OSError:
                continue
    return left


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text).lstrip())
    return folder


# -- the fixture: a NaN only rank 1's data makes -----------------------------------------------------------

@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory):
    report = tmp_path_factory.mktemp("ddp") / "report.html"
    proc = verify("--nproc-per-node", "2", "train.py", "--steps", "6", "--json", "--report", report, cwd=FIXTURE)
    return proc, dict(result_of(proc), page=report.read_text())


def test_the_nan_is_found_on_the_rank_that_made_it_with_its_line(fixture_run):
    _, result = fixture_run
    original = result["original"]
    nonfinite = checks(original)["nonfinite"]
    assert nonfinite["status"] == "fail" and nonfinite["data"]["rank"] == 1
    assert nonfinite["summary"] == "rank 1: NaN at step 3, forward: `div` in model (Classifier) at model.py:15"
    assert nonfinite["code"] == "x = x / x.norm(dim=-1, keepdim=True)"
    assert any("rank 0 got it from the gradient all-reduce" in d for d in nonfinite["details"])
    assert original["first_nonfinite"]["rank"] == 1 and original["trace"]["site"]["line"] == 15
    assert [(r["label"], r["status"], r["steps"]) for r in original["ranks"]] == [("rank 0", "stopped", 6),
                                                                                ("rank 1", "stopped", 6)]
    by_rank = {r["label"]: {c["key"]: c for c in r["checks"]} for r in original["ranks"]}
    assert by_rank["rank 0"]["nonfinite"]["summary"].startswith("NaN/Inf at step 3, first seen in the gradients")


def test_the_patched_ranks_are_healthy_and_agree(fixture_run):
    proc, result = fixture_run
    patched = checks(result["patched"])
    assert proc.returncode == 0 and result["verdict"]["status"] == "healthy"
    assert "non-finite values" in result["verdict"]["fixed"]
    assert patched["nonfinite"]["status"] == "ok" and "all ranks agree" in patched["nonfinite"]["details"]
    assert patched["rank_agreement"]["status"] == "ok" and patched["param_drift"]["status"] == "ok"
    assert patched["run"]["details"][0] == "world size 2, gloo, torchrun: all ranks agree"
    assert result["patch"]["codes"] == {"GL001": 1}
    assert not processes_in(FIXTURE)


def test_the_report_page_names_the_ranks_and_puts_them_side_by_side_where_they_differ(fixture_run):
    _, result = fixture_run
    page = result["page"]
    header = page[:page.index("<h2>")]
    assert "gradlint verify <code>--nproc-per-node 2 train.py</code>" in header
    assert "ranks <b>2 (gloo, torchrun)</b>" in header
    ranks = page[page.index("<h2>Ranks side by side</h2>"):page.index("<div class='origin'")]
    original = ranks[ranks.index("data-run='original'"):ranks.index("patched run:")]
    assert "<th>rank 0</th><th>rank 1</th>" in original and "the charts show rank 0's steps" in ranks
    assert "NaN/Inf at step 3, first seen in the gradients" in original  # rank 0: from the all-reduce
    assert "NaN at step 3, forward: <code>div</code> in model (Classifier) at model.py:15" in original  # rank 1
    assert "<h3>original, rank 1: NaN at step 3, forward: <code>div</code>" in page


# -- a rank that crashes ---------------------------------------------------------------------------------

RANK_CRASH = '''
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = DDP(nn.Linear(6, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(1, 100):
        if rank == 1 and step == 3:
            raise ValueError(f"a corrupt batch on rank {rank}")
        loss = F.cross_entropy(model(torch.randn(8, 6)), torch.randint(3, (8,)))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
'''


def test_a_rank_that_crashes_ends_the_group_and_is_named(tmp_path):
    folder = write(tmp_path / "crash", "train.py", RANK_CRASH)
    proc = verify("--nproc-per-node", "2", "train.py", "--steps", "8", "--json", cwd=folder)
    result = result_of(proc)
    original = result["original"]
    assert proc.returncode == 2 and original["status"] == "crashed"
    assert checks(original)["run"]["summary"] == "rank 1: crashed after 2 steps: ValueError: a corrupt batch on rank 1"
    assert original["error"]["rank_label"] == "rank 1" and original["error"]["type"] == "ValueError"
    assert "raise ValueError" in original["error"]["traceback"]
    assert not processes_in(folder)


# -- scripts that start their own workers ----------------------------------------------------------------

SPAWNED_DESYNC = '''
    """mp.spawn workers with a DDP body whose no_sync window is never closed, and a head no rank uses."""
    import sys

    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    import torch.nn.functional as F
    from torch.nn.utils import clip_grad_norm_
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(6, 16)
            self.head = nn.Linear(16, 3)
            self.unused_head = nn.Linear(16, 3)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))


    def main(rank, world_size, port):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
        model = DDP(Net(), find_unused_parameters=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(rank)
        with model.no_sync():
            for step in range(1000):
                x, y = torch.randn(8, 6, generator=generator), torch.randint(3, (8,), generator=generator)
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward(){clip}
                optimizer.step()


    if __name__ == "__main__":
        how, port = sys.argv[1], int(sys.argv[2])
        if how == "spawn":
            mp.spawn(main, args=(2, port), nprocs=2)
        else:
            workers = [mp.get_context(how).Process(target=main, args=(rank, 2, port)) for rank in range(2)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
'''


CLIP = "\n                clip_grad_norm_(model.parameters(), 1.0)"


@pytest.mark.parametrize("how", ["spawn", "fork"])
def test_workers_a_script_starts_are_checked_and_stopped(tmp_path, how):
    # spawned workers are new interpreters: the patched run must serve them its fixed __main__ (GL005's clip,
    # an unsafe fix: `clip_grad_norm_` is imported and never called)
    clip = "" if how == "spawn" else CLIP
    folder = write(tmp_path / how, "train.py", SPAWNED_DESYNC.replace("{clip}", clip))
    proc = verify("train.py", "--steps", "5", "--unsafe-fixes", "--json", "--", how, free_port(), cwd=folder)
    result = result_of(proc)
    original = result["original"]
    found = checks(original)
    assert [(r["label"], r["status"], r["steps"]) for r in original["ranks"]] == [("rank 0", "stopped", 5),
                                                                                ("rank 1", "stopped", 5)]
    assert found["rank_agreement"]["status"] == "fail" and "(a desync)" in found["rank_agreement"]["summary"]
    assert found["param_drift"]["status"] == "fail"
    assert found["unused_params"]["status"] == "warn"
    assert found["unused_params"]["data"]["parameters"] == ["unused_head.bias", "unused_head.weight"]
    assert proc.returncode == 1 and result["verdict"]["status"] == "unhealthy"
    if how == "spawn":
        clipping = checks(result["patched"])["clipping"]
        assert clipping["status"] == "ok" and "clipped in 5 of 5 steps" in clipping["summary"]  # on both ranks
        assert result["patched"]["served"] == ["train.py"]
    assert not processes_in(folder)


# -- CUDA ------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_fixture_on_cuda():
    # NCCL wants a GPU per rank; on a single GPU the ranks share it through gloo, which takes CUDA tensors.
    backend = "nccl" if torch.cuda.device_count() >= 2 else "gloo"
    proc = verify("--nproc-per-node", "2", "train.py", "--steps", "6", "--json", "--",
                  "--device", "cuda", "--backend", backend, cwd=FIXTURE)
    result = result_of(proc)
    nonfinite = checks(result["original"])["nonfinite"]
    assert nonfinite["data"]["rank"] == 1 and "model.py:15" in nonfinite["summary"]
    assert result["original"]["device"].startswith("cuda")
    assert proc.returncode == 0 and result["verdict"]["status"] == "healthy"


# -- gradlint.watch and the Lightning callback under DDP -------------------------------------------------

WATCHED = '''
    import json
    import sys

    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    import torch.nn.functional as F
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    import gradlint


    def main(rank, port, out):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
        torch.manual_seed(0)
        model = DDP(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(rank)
        with gradlint.watch(model, optimizer) as health:
            for step in range(1, 9):
                x, y = torch.randn(8, 6, generator=generator), torch.randint(3, (8,), generator=generator)
                if rank == 1 and step == 4:
                    x[0] = float("nan")  # a corrupt reading in rank 1's batch
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with open(f"{out}.{rank}", "w") as f:
            json.dump(health.summary(), f)
        dist.destroy_process_group()


    if __name__ == "__main__":
        mp.spawn(main, args=(int(sys.argv[1]), sys.argv[2]), nprocs=2)
'''


def test_watch_under_ddp_reports_the_merged_view_on_every_rank(tmp_path):
    folder = write(tmp_path, "watched.py", WATCHED)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "watched.py", str(free_port()), "summary"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((folder / "summary.0").read_text())
    found = {c["key"]: c for c in summary["checks"]}
    assert summary["ranks"] == 2 and not summary["healthy"]
    assert found["nonfinite"]["summary"].startswith("rank 1: NaN at step 4, before the model")
    assert found["rank_agreement"]["status"] == "ok" and found["param_drift"]["status"] == "ok"
    assert json.loads((folder / "summary.1").read_text())["checks"] == summary["checks"]  # gathered on every rank


LIGHTNING = '''
    import torch
    import torch.nn.functional as F
    from torch import nn
    import lightning as L
    from gradlint.verify.lightning import GradlintCallback


    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
            self.unused = nn.Linear(16, 3)  # no rank ever calls it

        def training_step(self, batch, index):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)


    if __name__ == "__main__":
        torch.manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(64, 6), torch.randint(3, (64,)))
        trainer = L.Trainer(strategy="ddp_find_unused_parameters_true", accelerator="cpu", devices=2, max_steps=6,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[GradlintCallback()])
        trainer.fit(Model(), torch.utils.data.DataLoader(data, batch_size=8))
'''


def test_the_lightning_callback_under_ddp_prints_the_merged_view_once(tmp_path):
    pytest.importorskip("lightning")
    folder = write(tmp_path, "fit.py", LIGHTNING)
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT=str(free_port()))
    proc = subprocess.run([sys.executable, "fit.py"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("gradlint health: 6 step(s), 2 ranks") == 1  # rank 0 prints, for all
    assert "all ranks agree: the gradients DDP syncs (3 layer(s)) have the same norm on 2 ranks" in proc.stdout
    assert "2 parameter(s) got no gradient on any rank in any step: unused.bias, unused.weight" in proc.stdout
