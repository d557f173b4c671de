"""OrderViewer: raster, random and MAR order side by side (headless widget tests)."""

from __future__ import annotations

import pytest
import torch

from ldetok_lite.generators import create_generator
from ldetok_lite.generators.mar import mar_schedule
from ldetok_lite.widgets.order_viewer import OrderViewer

AR = dict(hidden_size=32, depth=1, num_heads=2, head_width=16, head_depth=1, head_steps=2)
MAR = dict(hidden_size=32, depth=1, num_heads=2, buffer_size=2, head_width=16, head_depth=1, head_steps=2,
           num_iter=8)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"raster AR": create_generator("RasterAR_tiny", **AR).eval(),
            "random AR": create_generator("RandomAR_tiny", **AR).eval(),
            "MAR": create_generator("MAR_tiny", **MAR).eval()}


@pytest.fixture(scope="module")
def tokenizer():
    from ldetok_lite.tokenizer import create_tokenizer

    torch.manual_seed(0)
    return create_tokenizer("detok_tiny").eval()


def test_order_view_without_tokenizer(models):
    v = OrderViewer(models, num_samples=1)
    img = v.static()
    assert img.width > 100 and v.last_error is None
    assert v.current_params()["view"] == "order" and v.current_params()["step"] == 32
    assert list(v.params["view"].options) == ["order"]
    before = v.renders
    v.params["step"].value = 5  # observers fire synchronously in ipywidgets 8
    assert v.renders == before + 1 and v.last_params["step"] == 5


def test_counts_follow_each_order(models):
    v = OrderViewer(models, num_samples=1)
    assert v.generation("raster AR", 0, 0)["counts"] == list(range(65))
    assert v.generation("random AR", 0, 0)["counts"] == list(range(65))
    mar_counts = v.generation("MAR", 0, 0)["counts"]
    assert mar_counts == [0] + torch.tensor(mar_schedule(8, 64)).cumsum(0).tolist()
    assert v.step_index(mar_counts, 0) == 0
    assert v.step_index(mar_counts, 64) == 8
    k = v.step_index(mar_counts, 20)
    assert mar_counts[k] <= 20 < mar_counts[k + 1]
    steps = v.generation("raster AR", 0, 0)["steps"]
    assert torch.equal(steps[0].flatten(), torch.arange(1, 65))  # raster: row-major, one per step


def test_generation_is_cached_per_label_and_seed(models):
    v = OrderViewer(models, num_samples=1)
    a = v.generation("MAR", 1, 3)
    assert v.generation("MAR", 1, 3) is a
    assert v.generation("MAR", 1, 4) is not a


def test_mask_and_partial_views_with_tokenizer(models, tokenizer):
    v = OrderViewer(models, tokenizer=tokenizer, num_samples=2, step=10, generate_kwargs={"MAR": {"num_steps": 4}})
    img = v.static()
    assert v.current_params()["view"] == "mask"
    assert img.height > 2 * 32 * 4  # two rows of 32-px tiles at scale 4
    v.params["view"].value = "partial"
    assert v.last_error is None and v.last_params["view"] == "partial"
    v.params["view"].value = "order"
    assert v.last_error is None
    assert len(v.generation("MAR", 0, 0)["traj"]) == 5  # num_steps=4 from generate_kwargs


def test_bad_arguments(models, tokenizer):
    with pytest.raises(TypeError, match="models"):
        OrderViewer({})
    with pytest.raises(ValueError, match="needs a tokenizer"):
        OrderViewer(models, view="mask")
    with pytest.raises(ValueError, match="view"):
        OrderViewer(models, tokenizer=tokenizer, view="heatmap")
    with pytest.raises(ValueError, match="step"):
        OrderViewer(models, step=65)
    with pytest.raises(ValueError, match="latent shape"):
        OrderViewer({"a": models["MAR"], "b": create_generator("MAR_tiny", **{**MAR, "input_size": 4})})
    with pytest.raises(ValueError, match="generate_kwargs"):
        OrderViewer(models, generate_kwargs={"nope": {}})
    v = OrderViewer(models, num_samples=1)
    with pytest.raises(ValueError, match="label"):
        v.render(step=3, view="order", label=11, seed=0)
    v.params["step"].value = 3
    v.params["seed"].value = -1  # shown in the panel, not raised from the observer
    assert v.last_error is not None and "seed" in v.last_error
