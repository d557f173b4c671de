"""The base of every interactive panel (taught in notebooks/01 and used by all widget cells).

A panel has a pure ``render(**params) -> PIL.Image`` that headless runs and tests call directly,
and a thin ipywidgets layer: each control's value feeds the parameter of the same name, an
observer re-renders into an ``ipywidgets.Image`` when a value changes, and errors are shown in
the panel (and kept in ``last_error``) instead of vanishing inside a callback.

``panel.show(run, filename)`` is the widget cell of a notebook: it renders and saves the static
figure, shows it in a headless run (papermill, ``ldetok-lite run``) and, in an interactive
session, shows only the live panel, whose own image *is* that figure (a static copy above it
would go stale at the first slider move). Initial values outside a control's range raise a
``ValueError`` (:func:`check_range`) instead of being clamped by the slider.
"""

from __future__ import annotations

import traceback

import ipywidgets as W

from ..viz import png_bytes


def check_range(name: str, value, lo: float, hi: float, integer: bool = False):
    """``value`` if it is a number (an int when ``integer``) in ``[lo, hi]``; else a ``ValueError``
    naming the argument and the allowed range (an ipywidgets slider would clamp it silently)."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not lo <= value <= hi:
        kind = "an int" if integer else "a number"
        raise ValueError(f"{name}={value!r} is out of range; allowed: {kind} in [{lo:g}, {hi:g}]")
    return value


class Panel:
    """Subclass and implement ``render(**params)`` and ``build_controls() -> {param: widget}``."""

    title: str = ""

    def __init__(self):
        self.params: dict[str, W.ValueWidget] = self.build_controls()
        self.buttons: list[W.Button] = self.build_buttons()
        # natural size: in a VBox the image would otherwise stretch to the full output width
        self.image = W.Image(format="png", layout=W.Layout(align_self="flex-start"))
        self.status = W.HTML(value="")
        self.last_params: dict | None = None
        self.last_error: str | None = None
        self.renders = 0
        for w in self.params.values():
            w.observe(self._on_change, names="value")
        controls = list(self.params.values()) + self.buttons
        header = [W.HTML(f"<b>{self.title}</b>")] if self.title else []
        self.ui = W.VBox(header + [W.HBox(controls, layout=W.Layout(flex_flow="row wrap")), self.image,
                                   self.status])

    # --- to implement -------------------------------------------------------------------
    def build_controls(self) -> dict:
        """Return ``{param_name: widget}``; every widget's value is passed to ``render``."""
        raise NotImplementedError

    def build_buttons(self) -> list:
        """Optional action buttons (e.g. resample noise); call ``self.refresh()`` in handlers."""
        return []

    def render(self, **params):
        """Pure: parameters in, a PIL image out. Raises on bad input."""
        raise NotImplementedError

    # --- provided -----------------------------------------------------------------------
    def current_params(self) -> dict:
        return {name: w.value for name, w in self.params.items()}

    def refresh(self):
        """Re-render with the current control values and update the image (errors go to ``status``)."""
        params = self.current_params()
        try:
            img = self.render(**params)
        except Exception as e:  # shown in the panel, kept for tests
            self.last_error = "".join(traceback.format_exception_only(type(e), e)).strip()
            self.status.value = f"<pre style='color:#b00'>Error in {type(self).__name__}: {self.last_error}</pre>"
            raise
        self.image.value = png_bytes(img)
        self.last_params = params
        self.last_error = None
        self.status.value = self.describe(params)
        self.renders += 1
        return img

    def describe(self, params: dict) -> str:
        """A readout shown under the image (override for richer text)."""
        return " &nbsp; ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in params.items())

    def _on_change(self, _change=None):
        try:
            self.refresh()
        except Exception:
            pass  # already shown in ``status`` and kept in ``last_error``

    def static(self):
        """The figure for headless runs: render with the current (default) values; raises on error."""
        return self.refresh()

    def show(self, run, filename: str | None = None) -> None:
        """The widget cell: render the static figure (raises on error) and save it as
        ``run.out_dir/filename`` (default: the class name). A headless run shows that figure; an
        interactive one (``run.interactive``) shows only the live panel. Returns None."""
        img = self.static()
        interactive = bool(getattr(run, "interactive", False))
        run.save(img, filename or type(self).__name__.lower(), show=not interactive)
        if interactive:
            from IPython.display import display

            display(self.ui)

    def _ipython_display_(self):
        from IPython.display import display

        if self.last_params is None:
            self._on_change()
        display(self.ui)
