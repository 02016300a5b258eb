"""The `--report` page as a person reads it: rendered by headless Chromium and measured (bounding boxes, not
pixels) on the two fixtures and on a GAN (two optimizers) and an LBFGS script: every chart has labelled axes
and a legend and hover names, no label is cut or overlaps another, nothing runs past the window, the
NaN box holds the code around the line, the calls that led there, the tensors' facts and the rule that
would have caught it, the learning-rate and loss-scale charts appear when the script has them, and
backticks render as code. Without Chromium (`.ci/run` installs Debian's where it can) those tests skip;
the page's own content is checked without it.

The defects are on purpose: `# noqa` keeps `gradlint fix --write .` on this repository from fixing them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chromium  # noqa: E402  (tests/chromium.py)

ROOT = Path(__file__).resolve().parent.parent
needs_chromium = pytest.mark.skipif(chromium.executable() is None, reason="no Chromium here (.ci/run installs it)")


def _line_of(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.fixture(scope="module")
def transformer(verified):
    proc, out, _, _ = verified("transformer", "--steps", "24", "--device", "cpu", "--unsafe-fixes")  # shared with test_verify_cli
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout), out / "report.html"


@pytest.fixture(scope="module")
def clip(verified):
    proc, out, _, _ = verified("clip", "--steps", "20", "--device", "cpu")
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout), out / "report.html"


GAN = '''
    """dcgan's shape: a discriminator and a generator, an optimizer each, stepped in turn."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    netG = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh())
    netD = nn.Sequential(nn.Linear(16, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loss = nn.BCEWithLogitsLoss()
    for step in range(100):
        real = torch.randn(16, 16) * 0.5 + 1
        fake = netG(torch.randn(16, 8))
        optD.zero_grad()
        d_loss = loss(netD(real), torch.ones(16, 1)) + loss(netD(fake.detach()), torch.zeros(16, 1))
        d_loss.backward()
        optD.step()  # noqa: GL005
        optG.zero_grad()
        g_loss = loss(netD(fake), torch.ones(16, 1))
        g_loss.backward()
        optG.step()  # noqa: GL005
'''

LBFGS = '''
    """time_sequence_prediction's shape: LBFGS with a closure."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    for step in range(50):
        def closure():
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss
        optimizer.step(closure)
'''


def _run_script(tmp_path_factory, name: str, text: str, steps: int):
    folder = tmp_path_factory.mktemp(name)
    (folder / "train.py").write_text(textwrap.dedent(text).lstrip())
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_COLOR="1")
    proc = subprocess.run([str(Path(sys.executable).with_name("gradlint")), "verify", "train.py", "--steps",
                           str(steps), "--json", "--report", "report.html"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout), folder / "report.html"


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
    return _run_script(tmp_path_factory, "gan", GAN, 20)


@pytest.fixture(scope="module")
def lbfgs(tmp_path_factory):
    return _run_script(tmp_path_factory, "lbfgs", LBFGS, 8)


# -- the page itself ---------------------------------------------------------------------------------------

def test_page_is_self_contained_and_its_header_says_how_it_was_made(transformer):
    result, report = transformer
    page = report.read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    header = page[:page.index("<h2>")]
    assert f"gradlint <b>{result['gradlint']}</b>" in header and f"seed <b>{result['seed']}</b>" in header
    assert result["date"] in header and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", result["date"])
    assert "$ gradlint verify fixtures/transformer --steps 24 --device cpu --unsafe-fixes --json --report" in header


def test_backticks_become_code(transformer):
    result, report = transformer
    summary = next(c["summary"] for c in result["original"]["checks"] if c["key"] == "nonfinite")
    assert "`div`" in summary  # the data keeps the backticks; the page shows code
    assert "<code>div</code>" in report.read_text() and "`div`" not in report.read_text()


# -- what Chromium shows -----------------------------------------------------------------------------------

def _readable(shown: dict) -> None:
    """What every report must be: charts with labelled axes, named lines, nothing cut or overlapping."""
    assert shown["scrollWidth"] <= shown["viewport"] and shown["past_the_edge"] == []
    assert shown["backticks"] == []
    drawn = [c for c in shown["charts"] if c["svg"]]
    assert drawn, shown["charts"]
    for chart in drawn:
        assert chart["x_label"] == "step" and chart["y_label"], chart
        assert chart["legend"], chart
        if chart["lines"]:
            assert chart["hover"], chart  # each line names itself on hover
        assert chart["cut"] == [] and chart["overlaps"] == [], chart


def _chart(shown: dict, key: str) -> dict:
    return next(c for c in shown["charts"] if c["key"] == key)


@needs_chromium
def test_transformer_report_in_chromium(transformer):
    result, report = transformer
    shown = chromium.probe(report)
    _readable(shown)
    keys = {c["key"] for c in shown["charts"]}
    assert {"loss", "grad_norm", "lr", "heatmap-original", "heatmap-patched", "layer_norms-original",
            "layer_norms-patched", "update_ratio-original", "update_ratio-patched"} <= keys
    assert "loss_scale" not in keys  # the script has no GradScaler
    assert _chart(shown, "lr")["y_ticks"] == ["0.03"]  # a constant learning rate, labelled

    # the top layers by norm, the same ones in the same colours, on one y-range in both runs
    top = [_chart(shown, f"layer_norms-{run}") for run in ("original", "patched")]
    layers = [name for name in top[1]["legend"]]
    assert len(layers) == 8 < len(result["original"]["layers"])
    assert top[0]["legend"][:8] == layers and top[0]["y_ticks"] == top[1]["y_ticks"]
    ratios = [_chart(shown, f"update_ratio-{run}") for run in ("original", "patched")]
    assert ratios[0]["y_ticks"] == ratios[1]["y_ticks"] and ratios[1]["legend"][:8] == layers

    model = ROOT / "fixtures" / "transformer" / "model.py"
    line = _line_of(model, "x = x / x.norm(")
    box = next(o for o in shown["origins"] if o["run"] == "original")
    assert box["here"].split()[0] == str(line) and "x = x / x.norm(dim=-1, keepdim=True)" in box["here"]
    assert len(box["context"].splitlines()) == 7  # three lines either side
    assert box["chain"][0].startswith("fixtures/transformer/train.py:") and "<module>()" in box["chain"][0]
    assert "pred = model(sensors, mask)" in " ".join(box["chain"])
    assert box["chain"][-1].startswith(f"fixtures/transformer/model.py:{line} in forward()")
    tensors = {row[0]: row for row in box["tensors"]}
    zero_rows = int(tensors["input 1"][4])
    assert zero_rows > 0 and int(tensors["output"][5]) == zero_rows  # the zero rows are the NaN rows
    assert any(r.startswith(f"GL001 unguarded-norm-division at fixtures/transformer/model.py:{line}")
               and r.endswith("fixed by the patch") for r in box["rules"])


@needs_chromium
def test_clip_report_shows_the_loss_scale_and_its_skipped_steps(clip):
    result, report = clip
    shown = chromium.probe(report)
    _readable(shown)
    scale = _chart(shown, "loss_scale")
    skipped = [e["step"] for e in result["original"]["updates"]["loss_scale"] if e["skipped"]]
    assert skipped and scale["skipped_marks"] == len(skipped)
    assert "step skipped by the GradScaler" in scale["legend"] and scale["y_label"] == "scale (log)"
    assert "2¹⁶" in scale["y_ticks"]  # the initial scale, 65536
    assert _chart(shown, "lr")["lines"] == 2
    box = next(o for o in shown["origins"] if o["run"] == "original")
    assert box["chain"][-1].startswith("fixtures/clip/loss.py:") and "in similarity6()" in box["chain"][-1]
    assert any(r.startswith("GL001") for r in box["rules"])


@needs_chromium
def test_gan_report_has_a_series_per_optimizer_and_module_names(gan):
    result, report = gan
    shown = chromium.probe(report)
    _readable(shown)
    loss = _chart(shown, "loss")
    assert {"original netD", "original netG"} <= set(loss["legend"])  # no sawtooth of interleaved losses
    assert {"original netD", "original netG"} <= set(_chart(shown, "lr")["legend"])
    heat = _chart(shown, "heatmap-original")
    assert heat["y_ticks"] == result["original"]["layers"] and all(n.startswith(("netD.", "netG.")) for n in heat["y_ticks"])
    rows = result["original"]["layer_norms"]  # one column per step, every layer filled: no blank column
    assert len(rows) == 20 and all(v is not None for row in rows for v in row)


@needs_chromium
def test_lbfgs_report_reads_as_closure_steps(lbfgs):
    result, report = lbfgs
    shown = chromium.probe(report)
    _readable(shown)
    assert _chart(shown, "loss")["x_ticks"][0] == "1" and _chart(shown, "heatmap-original")["y_ticks"] == ["0", "2"]
    assert not any("param" in name for name in result["original"]["layers"])
