"""Pictures: image grids, sweep grids and curves (PIL for frames, matplotlib for charts), and
the figure helpers every notebook uses (class rows, training curves, the latent PCA picture).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image, ImageDraw

from . import _compat
from .analysis import latent_pca
from .io import atomic_write, read_jsonl


def to_pil(img) -> Image.Image:
    """A float image in [0, 1] ((3,H,W) or (H,W,3) tensor/array) or a PIL image -> PIL RGB."""
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    if isinstance(img, torch.Tensor):
        img = img.detach().float().cpu()
        if img.ndim == 3 and img.shape[0] in (1, 3):
            img = img.permute(1, 2, 0)
        img = img.numpy()
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, -1)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"image must be (3,H,W) or (H,W,3), got shape {tuple(arr.shape)}")
    return Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8))


def image_grid(images, nrow: int = 8, pad: int = 2, scale: int = 1, pad_value: float = 1.0) -> Image.Image:
    """Tile a batch (B,3,H,W) in [0, 1] into one PIL image, ``nrow`` images per row."""
    if isinstance(images, (list, tuple)):
        images = torch.stack([torch.as_tensor(i) for i in images])
    images = torch.as_tensor(images).detach().float().cpu().clamp(0, 1)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B,3,H,W), got shape {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    b, _, h, w = images.shape
    nrow = max(1, min(nrow, b))
    ncol = (b + nrow - 1) // nrow
    canvas = torch.full((3, ncol * (h + pad) + pad, nrow * (w + pad) + pad), pad_value)
    for i in range(b):
        r, c = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[:, y:y + h, x:x + w] = images[i]
    pil = to_pil(canvas)
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    return pil


def labelled_grid(rows, row_labels=(), col_labels=(), scale: int = 2, label_width: int = 90,
                  label_height: int = 16) -> Image.Image:
    """A sweep grid: ``rows`` is a list of batches (each (N,3,H,W)); labels go left and on top."""
    tiles = [image_grid(r, nrow=len(r), pad=2, scale=scale) for r in rows]
    width = max(t.width for t in tiles) + (label_width if row_labels else 0)
    top = label_height if col_labels else 0
    out = Image.new("RGB", (width, top + sum(t.height for t in tiles)), "white")
    draw = ImageDraw.Draw(out)
    x0 = label_width if row_labels else 0
    if col_labels:
        cell = (tiles[0].width - 2) / max(len(col_labels), 1)
        for j, text in enumerate(col_labels):
            draw.text((x0 + 2 + j * cell, 2), str(text), fill="black")
    y = top
    for i, t in enumerate(tiles):
        out.paste(t, (x0, y))
        if i < len(row_labels):
            draw.text((4, y + t.height // 2 - 6), str(row_labels[i]), fill="black")
        y += t.height
    return out


def png_bytes(img) -> bytes:
    """PNG-encode a PIL image or a [0,1] image tensor (for ``ipywidgets.Image.value``)."""
    buf = io.BytesIO()
    (img if isinstance(img, Image.Image) else to_pil(img)).save(buf, format="PNG")
    return buf.getvalue()


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure (then closed), a PIL image or an image tensor as PNG, atomically."""
    path = Path(path)
    if isinstance(fig, torch.Tensor):
        fig = image_grid(fig) if fig.ndim == 4 else to_pil(fig)
    if isinstance(fig, Image.Image):
        return atomic_write(path, lambda f: fig.save(f, format="PNG"))
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_curves(histories: dict, key: str = "loss", ax=None, smooth: int = 1, logy: bool = False):
    """Plot ``key`` against ``step`` for several runs ({label: list of metric dicts})."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    for label, rows in histories.items():
        pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
        if not pts:
            continue
        steps, vals = map(np.asarray, zip(*pts))
        if smooth > 1 and len(vals) > smooth:
            vals = np.convolve(vals, np.ones(smooth) / smooth, mode="valid")
            steps = steps[smooth - 1:]
        ax.plot(steps, vals, label=str(label))
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if histories:
        ax.legend(fontsize=8)
    return ax


def class_rows(images: torch.Tensor, labels: torch.Tensor, num_classes: int = 10,
               per_class: int | None = None) -> list[torch.Tensor]:
    """Rows of a class grid: one batch per class, in class order (empty classes skipped)."""
    labels = torch.as_tensor(labels).cpu()
    rows = [images[labels == c] for c in range(num_classes)]
    return [r[:per_class] if per_class else r for r in rows if len(r)]


def training_curve(run_dir: str | Path, title: str, key: str = "loss"):
    """The training loss of a run (its ``metrics.jsonl``) as a small figure."""
    rows = [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if key in r and "split" not in r]
    fig, ax = plt.subplots(figsize=(5, 2.6))
    plot_curves({title: rows}, key, ax=ax, smooth=max(1, len(rows) // 20))
    ax.set_title(f"{title}: training {key} ({len(rows)} logged steps)", fontsize=9)
    return fig


def latent_pca_image(tokenizers: dict, images: torch.Tensor, scale: int = 4) -> Image.Image:
    """Input images, then each tokenizer's latent grid on its first 3 principal components as RGB
    (``analysis.latent_pca``), one labelled row each (notebook 04)."""
    rows, labels = [images.cpu().float()], ["input"]
    h = images.shape[-1]
    for name, tok in tokenizers.items():
        pic = latent_pca(tok, images)
        rows.append(torch.nn.functional.interpolate(pic, size=(h, h), mode="nearest"))
        labels.append(f"{name} PCA")
    return labelled_grid(rows, row_labels=labels, scale=scale // 2 or 1)


def __getattr__(name: str):  # names that moved to another module in this release (ldetok_lite._compat)
    return _compat.moved_attribute(__name__, name)
