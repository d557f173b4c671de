"""SamplerPanel: headless rendering, the Generate button, purity, and errors."""

import inspect

import pytest
import torch

from ldetok_lite.generators import create_generator
from ldetok_lite.viz import png_bytes
from ldetok_lite.widgets.sampler_panel import SamplerPanel, pick_frames


class FakeTokenizer(torch.nn.Module):
    token_channels, grid_size = 8, 4

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def detokenize(self, z):
        return torch.sigmoid(z[:, :3].repeat_interleave(8, -1).repeat_interleave(8, -2))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_generator("SiT_tiny", hidden_size=32, depth=1, num_heads=2, input_size=4)


def test_pick_frames():
    assert pick_frames(3, 8) == [0, 1, 2]
    f = pick_frames(251, 6)
    assert f[0] == 0 and f[-1] == 250 and len(f) == 6


def test_static_render_and_generate_button(model):
    panel = SamplerPanel(model, FakeTokenizer(), class_names=[f"c{i}" for i in range(10)], num_steps=4,
                         num_samples=2, num_frames=3, sampler_kwargs={"sampler": "euler"})
    img = panel.static()
    assert img.width > 0 and panel.renders == 1 and panel.last_error is None
    assert panel.image.value  # PNG bytes shown
    # moving a control does not sample, it marks the figure stale
    panel.params["cfg_scale"].value = 2.0
    assert panel.renders == 1 and "Generate" in panel.status.value
    panel.generate_button.click()
    assert panel.renders == 2 and panel.last_params["cfg_scale"] == 2.0
    assert "cfg = 2" in panel.status.value and "network evaluations = 4" in panel.status.value


def test_render_is_pure(model):
    panel = SamplerPanel(model, FakeTokenizer(), num_steps=3, num_samples=2, num_frames=4,
                         sampler_kwargs={"sampler": "euler"})
    a = png_bytes(panel.render(label=1, cfg_scale=1.5, num_steps=3, seed=5))
    panel._cache.clear()
    b = png_bytes(panel.render(label=1, cfg_scale=1.5, num_steps=3, seed=5))
    c = png_bytes(panel.render(label=1, cfg_scale=1.5, num_steps=3, seed=6))
    assert a == b and a != c
    # unconditional (null class) works too
    panel.render(label=10, cfg_scale=1.0, num_steps=2, seed=0)


def test_errors(model):
    tok = FakeTokenizer()
    with pytest.raises(ValueError, match="class_names has 2 names"):
        SamplerPanel(model, tok, class_names=["a", "b"])
    with pytest.raises(ValueError, match="label=11"):
        SamplerPanel(model, tok, label=11)
    with pytest.raises(TypeError, match="generator"):
        SamplerPanel(object(), tok)
    panel = SamplerPanel(model, tok, num_steps=2, num_samples=1, sampler_kwargs={"sampler": "euler"})
    panel.static()
    panel.params["seed"].value = -1
    panel.generate_button.click()  # the error is shown in the panel, not raised into the event loop
    assert "seed=-1" in panel.last_error and "Error" in panel.status.value
    with pytest.raises(ValueError, match="seed=-1"):
        panel.render(label=0, cfg_scale=1.0, num_steps=2, seed=-1)


def test_readout_after_cached_render_and_unchanged_generate(model):
    panel = SamplerPanel(model, FakeTokenizer(), num_steps=4, num_samples=1, num_frames=2,
                         sampler_kwargs={"sampler": "euler"})
    panel.static()
    assert "network evaluations = 4" in panel.status.value
    panel.params["num_steps"].value = 2
    panel.generate_button.click()
    assert "network evaluations = 2" in panel.status.value
    panel.params["num_steps"].value = 4  # back to a cached setting: the readout follows the image
    panel.generate_button.click()
    assert "network evaluations = 4" in panel.status.value and "nothing changed" not in panel.status.value
    renders = panel.renders
    panel.generate_button.click()  # nothing changed: say so
    assert panel.renders == renders + 1 and "nothing changed" in panel.status.value
    assert "network evaluations = 4" in panel.status.value


def test_labels_are_integers_and_mar_starts_from_an_empty_canvas(model):
    panel = SamplerPanel(model, FakeTokenizer(), num_steps=2, num_samples=2, num_frames=2,
                         sampler_kwargs={"sampler": "euler"})
    assert panel.start_label == "noise" and "noise" in panel.title
    mar = create_generator("MAR_tiny", input_size=4, in_channels=8)
    assert SamplerPanel(mar, FakeTokenizer(), num_steps=2).start_label == "empty canvas"
    src = inspect.getsource(SamplerPanel.render)
    assert '{seed}.{r}' not in src and "#{r}" in src


@pytest.mark.parametrize("kwargs, match", [
    (dict(cfg_scale=0.5), r"cfg_scale=0.5 is out of range; allowed: a number in \[1, 8\]"),
    (dict(cfg_scale=9.0), r"cfg_scale=9.0 is out of range"),
    (dict(num_steps=300), r"num_steps=300 is out of range; allowed: an int in \[1, 250\]"),
    (dict(num_steps=0), r"num_steps=0"),
    (dict(num_steps=2.5), r"num_steps=2.5"),
    (dict(seed=-1), r"seed=-1"),
])
def test_out_of_range_arguments_raise_instead_of_clamping(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplerPanel(model, FakeTokenizer(), **kwargs)


class FakeRun:
    def __init__(self, interactive):
        self.interactive, self.saved = interactive, []

    def save(self, fig, filename, show=True):
        self.saved.append((filename, show))


@pytest.mark.parametrize("interactive", [False, True])
def test_show_displays_the_static_copy_only_when_headless(model, interactive, monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    panel = SamplerPanel(model, FakeTokenizer(), num_steps=2, num_samples=1, sampler_kwargs={"sampler": "euler"})
    run = FakeRun(interactive)
    assert panel.show(run, "sampler.png") is None
    assert run.saved == [("sampler.png", not interactive)]  # always saved; shown only when headless
    assert panel.renders == 1 and panel.image.value
    assert shown == ([panel.ui] if interactive else [])
