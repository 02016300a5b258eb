"""GL001 and evaluation code: a network's outputs normalised without gradients are not reported; a statistic
of them, or the same normalisation with gradients, is."""

from __future__ import annotations

import pytest

from gradlint.engine import lint_text
from gradlint.registry import every_rule

GL001 = [rule for rule in every_rule() if rule.code == "GL001"]


def rows(text: str) -> list[int]:
    return [f.location.row for f in lint_text(text, "evaluate.py", GL001)]


ZERO_SHOT = """import torch


def zero_shot(model, images, prompts):
    with torch.no_grad():
        image_features = model.encode_image(images)
        text_features = model.encode_text(prompts)
    image_features /= image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return image_features @ text_features.T
"""


def test_outputs_computed_without_gradients_are_not_reported_inside_or_after_the_block():
    assert rows(ZERO_SHOT) == []
    inside = ZERO_SHOT.replace("    image_features /=", "        image_features /=").replace(
        "    text_features = text_features", "        text_features = text_features")
    assert rows(inside) == []


def test_the_same_normalisation_with_gradients_is_reported():
    training = ZERO_SHOT.replace("    with torch.no_grad():\n", "    if True:\n")
    assert rows(training) == [8, 9]


@pytest.mark.parametrize("statistic", ["e.mean(dim=0)", "e.sum(0)", "e - e.mean(0)"])
def test_a_statistic_of_the_outputs_is_reported(statistic):
    text = ("import torch\n\n\ndef classifier(model, texts):\n    with torch.no_grad():\n"
            "        e = model.encode_text(texts)\n"
            f"        c = {statistic}\n        return c / c.norm(dim=-1, keepdim=True)\n")
    assert rows(text) == [8]


def test_a_helper_of_the_module_is_not_a_network():
    text = ("import torch\n\n\ndef features(x):\n    return x * 2\n\n\n"
            "def embed(x):\n    with torch.no_grad():\n        f = features(x)\n"
            "        return f / f.norm(dim=-1, keepdim=True)\n")
    assert rows(text) == [11]


INIT = """import torch
from torch import nn


def init_normed(layer, scale=1.0):
    with torch.no_grad():
        layer.weight.data *= scale / layer.weight.norm(dim=1, keepdim=True)
    return layer


class Agent(nn.Module):
    def __init__(self, trunk):
        super().__init__()
        self.head = init_normed(nn.Linear(8, 2))
{extra}"""


def test_weights_of_a_module_just_built_have_no_zero_row():
    assert rows(INIT.format(extra="")) == []


@pytest.mark.parametrize("extra", [
    "        self.trunk = init_normed(trunk)\n",  # a module handed in: its weights may be anything
    "        self.apply(init_normed)\n",  # used other than by a call
    "        emb = nn.Embedding(10, 8, padding_idx=0)\n        emb = trunk\n        init_normed(emb)\n",
    # built, then zeroed before it is handed over: no longer its random initial weights
    "        fc = nn.Linear(8, 2)\n        nn.init.zeros_(fc.weight)\n        self.fc = init_normed(fc)\n",
])
def test_weights_of_any_other_module_are_reported(extra):
    assert rows(INIT.format(extra=extra)) == [7]


def test_weights_zeroed_inside_the_function_before_the_division_are_reported():
    zeroed = INIT.format(extra="").replace(
        "    with torch.no_grad():\n", "    with torch.no_grad():\n        layer.weight.data.zero_()\n")
    assert rows(zeroed) == [8]


@pytest.mark.parametrize("computed", ["f.clamp(min=0)", "torch.relu(f)"])
def test_a_computation_on_the_outputs_is_not_the_outputs(computed):
    text = ("import torch\n\n\ndef embed(model, x):\n    with torch.no_grad():\n"
            f"        f = model(x)\n        g = {computed}\n        return g / g.norm(dim=-1, keepdim=True)\n")
    assert rows(text) == [8]

