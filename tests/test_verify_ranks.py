"""The parent's side of a distributed run, on the files ranks write: one record made of several (`merge`), the
checks merged per rank and the checks across ranks (`rankchecks`), the options and the mistake of starting
verify inside torchrun (`distributed_options`). No process is started here; torch is not needed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gradlint.verify import distributed_options
from gradlint.verify.merge import collect
from gradlint.verify.rankchecks import checks_of, rank_table


def rank_record(rank: int, steps: int = 4, norms=None, status: str = "stopped", **extra) -> dict:
    """A rank's record as the harness writes it: one layer `fc` that DDP syncs, a loss a step."""
    norms = norms or [0.5] * steps
    rows = [{"step": s + 1, "series": 0, "norms": [norms[s]], "total": norms[s], "loss": 1.0 - 0.01 * s + 0.001 * rank,
             "losses": 1, "fwd_nan": False, "clips": [], "skipped": False} for s in range(steps)]
    record = {"status": status, "steps": steps, "rows": rows, "layers": ["fc"], "error": None,
              "series": [{"index": 0, "name": "optimizer", "steps": steps, "kind": "optimizer"}],
              "forwards": {"training": steps, "no_grad": 0}, "thresholds": {}, "first_nonfinite": None,
              "rank": rank, "world_size": 2, "backend": "gloo", "synced": ["fc.weight", "fc.bias"],
              "synced_layers": ["fc"], "checksums": [{"step": 1, "values": [1.0, 0.1]},
                                                      {"step": steps, "values": [1.5, 0.2]}],
              "never_graded": [], "ended_at": 100.0 + rank}
    record.update(extra)
    return record


def write_run(folder: Path, records: dict, progress: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for who, record in records.items():
        (folder / f"{who}.pid").write_text("1\n")
        if record is not None:
            (folder / f"{who}.json").write_text(json.dumps(record))
    for who, step in (progress or {}).items():
        (folder / f"{who}.progress").write_text(f"{step}\n")
    return folder


def by_key(checks) -> dict:
    return {c.key: c for c in checks}


def merged(tmp_path, records, progress=None, ended_by=None, ranked=True):
    return collect(write_run(tmp_path / "run", records, progress), ranked=ranked, steps=4, timeout=30,
                   ended_by=ended_by, exit_status=0)


def test_healthy_ranks_agree_on_every_check(tmp_path):
    record = merged(tmp_path, {"rank0": rank_record(0), "rank1": rank_record(1)})
    assert record["status"] == "stopped" and [m["label"] for m in record["ranks"]] == ["rank 0", "rank 1"]
    checks = by_key(checks_of(record))
    assert checks["rank_agreement"].status == "ok" and checks["rank_agreement"].summary.startswith("all ranks agree")
    assert checks["param_drift"].status == "ok" and "steps 1, 4" in checks["param_drift"].summary
    assert checks["unused_params"].status == "ok"
    assert "all ranks agree" in checks["exploding"].details
    # the losses differ per rank (each its own batch): shown side by side, not "all ranks agree"
    assert checks["loss"].summary.startswith("rank 0: ") and any(d.startswith("rank 1: ok") for d in checks["loss"].details)
    table = rank_table(record, width=120)
    assert table[0].split() == ["check", "rank", "0", "rank", "1"] and any(line.startswith("loss") for line in table)


def test_a_desync_is_named_with_its_step_layer_and_ranks(tmp_path):
    record = merged(tmp_path, {"rank0": rank_record(0, norms=[0.5, 0.5, 0.5, 0.5]),
                               "rank1": rank_record(1, norms=[0.5, 0.5, 0.61, 0.7])})
    check = by_key(checks_of(record))["rank_agreement"]
    assert check.status == "fail"
    assert check.summary == "ranks disagree from step 3: fc gradient norm 0.5 on rank 0, 0.61 on rank 1 (a desync)"
    assert check.data["differing"] == 2 and check.data["first_step"] == 3


def test_parameters_that_drift_apart_fail_from_the_first_checksum_that_differs(tmp_path):
    drifted = rank_record(1, checksums=[{"step": 1, "values": [1.0, 0.1]}, {"step": 4, "values": [1.5000001, 0.25]}])
    record = merged(tmp_path, {"rank0": rank_record(0), "rank1": drifted})
    check = by_key(checks_of(record))["param_drift"]
    assert check.status == "fail" and check.data["drifted"] == ["fc.bias"]  # within the tolerance: fc.weight
    assert check.summary.startswith("parameters differ across ranks from step 4: fc.bias norm 0.2 on rank 0, 0.25")
    close = rank_record(1, checksums=[{"step": 1, "values": [1.0, 0.1]}, {"step": 4, "values": [1.5, 0.20004]}])
    check = by_key(checks_of(merged(tmp_path / "close", {"rank0": rank_record(0), "rank1": close})))["param_drift"]
    assert "fc.bias norm 0.2 on rank 0, 0.20004 on rank 1" in check.summary  # digits enough to see the difference


def test_a_parameter_no_rank_gave_a_gradient_warns(tmp_path):
    record = merged(tmp_path, {"rank0": rank_record(0, never_graded=["aux.weight", "head.bias"]),
                               "rank1": rank_record(1, never_graded=["aux.weight"])})
    check = by_key(checks_of(record))["unused_params"]
    assert check.status == "warn" and check.data["parameters"] == ["aux.weight"]  # head.bias had one on rank 1


def test_no_ddp_model_means_nothing_to_compare(tmp_path):
    plain = {f"rank{r}": rank_record(r, synced=[], synced_layers=[], checksums=[]) for r in (0, 1)}
    checks = by_key(checks_of(merged(tmp_path, plain)))
    assert checks["rank_agreement"].status == checks["param_drift"].status == "n/a"
    assert "no DistributedDataParallel model" in checks["rank_agreement"].summary


def test_the_first_crash_is_the_cause_the_others_follow_it(tmp_path):
    gone = rank_record(0, status="crashed", steps=2, ended_at=105.0,
                       error={"type": "RuntimeError", "message": "Connection closed by peer", "traceback": None})
    cause = rank_record(1, status="crashed", steps=2, ended_at=101.0,
                        error={"type": "ValueError", "message": "bad batch", "traceback": "Traceback ..."})
    record = merged(tmp_path, {"rank0": gone, "rank1": cause}, ended_by="rank1")
    assert record["status"] == "crashed" and record["error"]["rank_label"] == "rank 1"
    assert record["error"]["type"] == "ValueError"
    run = by_key(checks_of(record))["run"]
    assert run.summary == "rank 1: crashed after 2 steps: ValueError: bad batch"
    assert any(d.startswith("rank 0: crashed after 2 steps (RuntimeError: Connection closed") for d in run.details)


def test_a_rank_killed_without_a_record_is_said(tmp_path):
    record = merged(tmp_path, {"rank0": rank_record(0, steps=3), "rank1": None}, progress={"rank1": 2})
    assert record["status"] == "crashed" and record["error"]["rank_label"] == "rank 1"
    assert "ended at step 2 without a record" in record["error"]["message"]
    assert "rank 0 only: the others left no record" in by_key(checks_of(record))["gradient_flow"].details


def test_a_timeout_names_each_ranks_step_and_line(tmp_path):
    stuck = rank_record(1, status="terminated", steps=2, error={
        "type": "Terminated", "message": "stopped at train.py:17: time.sleep(1000)", "traceback": None})
    record = merged(tmp_path, {"rank0": None, "rank1": stuck}, progress={"rank0": 3, "rank1": 2}, ended_by="timeout")
    message = record["error"]["message"]
    assert record["status"] == "timeout"
    assert "rank 0 after step 3, no record: it did not answer SIGTERM" in message
    assert "rank 1 after step 2, stopped at train.py:17: time.sleep(1000)" in message
    assert "rank 1 fell behind" in message


def test_a_nan_is_shown_on_the_rank_where_it_was_born(tmp_path):
    got_it = rank_record(0, first_nonfinite={"step": 3, "seen_in": "gradients", "layers": ["fc"], "n_layers": 1})
    born = rank_record(1, first_nonfinite={"step": 3, "seen_in": "model output", "layers": ["fc"], "n_layers": 1},
                       trace={"phase": "forward", "kind": "nan", "op": "div", "module": "model",
                              "module_class": "Classifier", "site": {"file": "model.py", "line": 15, "code": "x / n"}})
    record = merged(tmp_path, {"rank0": got_it, "rank1": born})
    assert record["first_nonfinite"]["rank"] == 1 and record["trace"]["op"] == "div"
    check = by_key(checks_of(record))["nonfinite"]
    assert check.summary == "rank 1: NaN at step 3, forward: `div` in model (Classifier) at model.py:15"
    assert any("rank 0 got it from the gradient all-reduce of the same step" in d for d in check.details)


def test_spawned_workers_that_trained_are_the_ranks_and_the_launcher_the_run(tmp_path):
    main = {"status": "finished", "steps": 0, "rows": [], "layers": [], "series": [], "error": None,
            "script": "multigpu.py", "project_files": ["/p/multigpu.py"], "torch": "2.13"}
    loader = {"status": "no_steps", "steps": 0, "rows": [], "layers": [], "rank": None}  # a helper that never trained
    record = merged(tmp_path, {"main": main, "child11": rank_record(1), "child10": rank_record(0), "child12": loader},
                    ranked=False)
    assert [m["label"] for m in record["ranks"]] == ["rank 0", "rank 1"]
    assert record["status"] == "stopped" and record["distributed"]["launcher"] == "workers"
    assert record["script"] == "multigpu.py" and record["project_files"] == ["/p/multigpu.py"]


def test_one_process_without_workers_is_the_record_it_always_was(tmp_path):
    single = {"status": "stopped", "steps": 4, "rows": [], "layers": [], "error": None}
    record = merged(tmp_path, {"main": single}, ranked=False)
    assert "ranks" not in record and record["status"] == "stopped"


def _args(**kw):
    return argparse.Namespace(**{"path": "train.py", "module": None, "nnodes": 1, **kw})


def test_verify_started_inside_torchrun_is_explained():
    environ = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "x", "MASTER_PORT": "29500"}
    problem = distributed_options.problem(_args(), environ)
    assert "inside a distributed launcher" in problem
    assert "gradlint verify --nproc-per-node 2 train.py -- ARGS" in problem
    assert distributed_options.problem(_args(), {}) is None
    assert "--nnodes 1 only" in distributed_options.problem(_args(nnodes=2), {})


def test_the_launch_a_script_expects_is_hinted():
    crash = {"error": {"type": "KeyError", "message": "'LOCAL_RANK'"}}
    single = _args(nproc_per_node=None, steps=30, script_args=["2", "1"])
    assert "add --nproc-per-node N" in distributed_options.hint(crash, single)
    assert distributed_options.hint(crash, _args(nproc_per_node=2)) is None
    assert distributed_options.hint({"error": {"type": "KeyError", "message": "'lr'"}}, single) is None
    spawns = {"error": {"type": "LaunchError", "message": "the script starts its own workers"}}
    assert distributed_options.hint(spawns, _args(nproc_per_node=2, steps=30, script_args=["2", "1"])) == \
        "gradlint verify train.py --steps 30 -- 2 1"


def test_inside_torchrun_only_the_first_rank_speaks(gradlint, tmp_path, monkeypatch):
    (tmp_path / "train.py").write_text("raise SystemExit('never runs')\n")
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "x"}.items():
        monkeypatch.setenv(name, value)
    code, out, err = gradlint(tmp_path, "verify", "train.py")
    assert code == 2 and err == ""
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    code, out, err = gradlint(tmp_path, "verify", "train.py")
    assert code == 2 and "inside a distributed launcher" in err and "--nproc-per-node 2" in err
