"""Proof on real code: `gradlint fix --write --unsafe-fixes` over real packages breaks nothing, and the
region reduction finds exactly what a full parse finds.

CI runs every file of open-clip-torch, timm and lightning and a fixed, representative part of
transformers (its top-level training/modeling modules, its loss and optimisation code, a fixed list of
model families — CLIP-like encoders, LLMs, speech and vision — and every 10th other file), so that this
file stays around a couple of minutes on 2 cores, the corpus download included.
`python benchmarks/bench.py` runs the same checks over every file of every corpus.
See `benchmarks/roundtrip.py` for what exactly is checked.
"""

from __future__ import annotations

import os

import pytest

from benchmarks.corpus import CORPORA, CorpusUnavailable, corpus_dir
from benchmarks.roundtrip import _apply, _outside_sites, fix_roundtrip, reduction_mismatches

# transformers/models/<family>: where the CLIP-style normalisations, the optimizers and the losses are.
TRANSFORMERS_FAMILIES = {
    "clip", "siglip", "siglip2", "x_clip", "owlvit", "groupvit", "align", "blip", "clap", "clvp", "llama",
    "mixtral", "dbrx", "gpt2", "bert", "t5", "vit", "whisper", "wav2vec2", "esm", "patchtst", "encodec",
}
EVERY_NTH = 10


def _transformers_subset(root, files):
    chosen, rest = [], []
    for path in files:
        parts = path.relative_to(root).parts  # ("transformers", ...)
        if (len(parts) == 2 or parts[1] == "loss"
                or (parts[1] == "models" and len(parts) > 3 and parts[2] in TRANSFORMERS_FAMILIES)):
            chosen.append(path)
        else:
            rest.append(path)
    return chosen + rest[::EVERY_NTH]


def _corpus(name):
    try:
        root = corpus_dir(name)
    except CorpusUnavailable as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"corpus {name} unavailable: {error}")
    files = sorted(root.rglob("*.py"))
    if name == "transformers":
        files = _transformers_subset(root, files)
    return root, files


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CORPORA))
def test_fix_roundtrip_breaks_nothing(name, tmp_path):
    root, files = _corpus(name)
    result = fix_roundtrip(files, root, tmp_path)
    assert result.files == len(files) > 0
    # Each problem names the file and what broke: a file that no longer compiles, a byte changed outside
    # the reported edits, a file changed without a reported fix, or a second run that changes it again.
    assert not result.problems, "\n".join(result.problems)
    assert result.changed_files == result.exact_files + result.contained_files


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CORPORA))
def test_region_reduction_finds_what_a_full_parse_finds(name):
    root, files = _corpus(name)
    mismatches = reduction_mismatches(files, root)
    assert not mismatches, "\n".join(mismatches)


# The checker itself must catch what it is there to catch.

def test_a_change_outside_the_reported_edits_is_caught():
    old = "import torch\nx = a / a.norm()\ny = 1\n"
    start = old.index("a / a.norm()")
    spans = [(start, start + len("a / a.norm()"), "F.normalize(a)")]
    assert _apply(old, spans) == "import torch\nx = F.normalize(a)\ny = 1\n"
    inside = "import torch\nx = F.normalize(a)\ny = 1\n"
    assert _outside_sites(old, inside, spans) is None
    outside = "import torch\nx = F.normalize(a)\ny = 2\n"
    assert _outside_sites(old, outside, spans) == old.index("1\n", start)


def test_an_added_import_is_inside_its_reported_insertion():
    old = "import torch\nx = a / a.norm()\n"
    at = len("import torch\n")
    spans = [(at, at, "import torch.nn.functional as F\n")]
    new = "import torch\nimport torch.nn.functional as F\nx = a / a.norm()\n"
    assert _outside_sites(old, new, spans) is None
    assert _outside_sites(old, new, []) == at
