"""`gradlint verify --nproc-per-node N [--nnodes 1]`: the options of a distributed run, the mistake of starting
verify itself under torchrun, and the hint for a script that expects a launcher. Torch-free."""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Optional

# What torchrun (torch.distributed.run) sets in each process it starts.
LAUNCHER_VARIABLES = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("distributed training (both runs under torchrun, each rank checked)")
    group.add_argument("--nproc-per-node", "--nproc_per_node", type=_count, metavar="N",
                       help="launch the script as `torchrun --nproc-per-node N` does (a fresh rendezvous per run); "
                            "one report for all ranks")
    group.add_argument("--nnodes", type=_count, default=1, metavar="1",
                       help="nodes of the launch: 1 (both runs happen on this machine)")
    group.add_argument("--drift-every", type=_count, default=10, metavar="K",
                       help="steps between two comparisons of the ranks' parameters (default: 10)")


def problem(args: argparse.Namespace, environ=None) -> Optional[str]:
    """Why these options cannot run here, or None."""
    environ = os.environ if environ is None else environ
    started = [name for name in LAUNCHER_VARIABLES if name in environ]
    if "TORCHELASTIC_RUN_ID" in started or {"RANK", "WORLD_SIZE"} <= set(started):
        rank, world = environ.get("RANK", "?"), environ.get("WORLD_SIZE", "?")
        target = f"-m {args.module}" if getattr(args, "module", None) else (getattr(args, "path", None) or "train.py")
        return (f"gradlint verify is running inside a distributed launcher (RANK={rank}, WORLD_SIZE={world} are "
                f"set: `torchrun ... gradlint verify`?): each of its {world} copies would launch runs of its own, "
                "and their children would join each other's groups. Run it once, outside torchrun, and let it "
                f"launch the ranks: gradlint verify --nproc-per-node {world if world.isdigit() else 'N'} {target} "
                "-- ARGS")
    if getattr(args, "nnodes", 1) != 1:
        return ("--nnodes 1 only: verify runs the original and the patched run one after the other on this machine; "
                "check a multi-node job on one node with --nproc-per-node")
    return None


def hint(record: dict, args: argparse.Namespace) -> Optional[str]:
    """What to run instead, when the run says the launch was not the one the script expects: a script that
    reads torchrun's variables without --nproc-per-node, one that spawns its own workers with it."""
    error = record.get("error") or {}
    nproc = getattr(args, "nproc_per_node", None)
    if error.get("type") == "LaunchError":
        target = f"-m {args.module}" if args.module else args.path
        tail = f" -- {shlex.join(args.script_args)}" if getattr(args, "script_args", None) else ""
        return f"gradlint verify {target} --steps {args.steps}{tail}"
    if nproc is not None:
        return None
    message = f"{error.get('type', '')}: {error.get('message', '')}"
    expects = any(f"'{name}'" in message for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR")) and \
        error.get("type") == "KeyError"
    expects = expects or "environment variable RANK expected" in message or \
        "environment variable WORLD_SIZE expected" in message
    if not expects:
        return None
    return ("the script expects to be started by torchrun (it reads RANK/LOCAL_RANK/WORLD_SIZE): "
            "add --nproc-per-node N to verify it under torchrun")
