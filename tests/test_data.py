import hashlib

import pytest
import torch
from PIL import Image

from ldetok_lite.config import DataConfig
from ldetok_lite.data import (
    PHOTO_NAMES,
    SHAPE_RADII,
    SHAPES_CLASSES,
    DataError,
    ImageFolderDataset,
    PhotoCropDataset,
    ShapesDataset,
    center_crop_arr,
    make_dataset,
    make_loader,
    sample_photos,
    shapes_like,
)


def test_shapes_is_deterministic_and_split_streams_differ():
    a = ShapesDataset(200, 32, seed=1)
    b = ShapesDataset(200, 32, seed=1)
    c = ShapesDataset(200, 32, seed=2)
    v = ShapesDataset(200, 32, seed=1, split="val")
    assert torch.equal(a.images_uint8, b.images_uint8) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images_uint8, c.images_uint8)
    assert not torch.equal(a.images_uint8, v.images_uint8)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_shapes_shapes_and_range(size):
    ds = ShapesDataset(20, size, seed=0)
    img, label = ds[3]
    assert img.shape == (3, size, size) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert 0 <= label < 10


def test_shapes_classes_are_balanced_and_distinct():
    ds = ShapesDataset(1000, 32, seed=0)
    assert len(SHAPES_CLASSES) == 10
    assert torch.bincount(ds.labels, minlength=10).tolist() == [100] * 10
    # the colour family is visible: warm classes are redder than cool ones on average
    imgs = ds.images
    warm = imgs[ds.labels < 5]
    cool = imgs[ds.labels >= 5]
    assert (warm[:, 0] - warm[:, 2]).mean() > (cool[:, 0] - cool[:, 2]).mean() + 0.05
    # images vary within a class (not copies)
    same = imgs[ds.labels == 0]
    assert (same[0] - same[1]).abs().mean() > 0.05


def test_shapes_bad_arguments():
    with pytest.raises(DataError, match="img_size=33"):
        ShapesDataset(10, 33)
    with pytest.raises(DataError, match="split='test'"):
        ShapesDataset(10, 32, split="test")
    with pytest.raises(DataError, match="variant='shapes-huge'.*'shapes', 'shapes-large'"):
        ShapesDataset(10, 32, variant="shapes-huge")


def test_shapes_data_is_unchanged():
    # the shipped reference models and every cached run were trained on these exact images
    ds = ShapesDataset(64, 32, seed=0)
    digest = hashlib.sha256(ds.images_uint8.numpy().tobytes()).hexdigest()[:16]
    assert digest == "186a5840406e9ab6"


def _foreground_fraction(images: torch.Tensor) -> float:
    # the shapes are saturated (HSV saturation >= 0.65 before shading), the backgrounds pale (<= 0.5)
    hi, lo = images.amax(1), images.amin(1)
    saturation = (hi - lo) / hi.clamp_min(1e-6)
    return float((saturation > 0.6).float().mean())


def test_shapes_large_draws_the_same_classes_larger():
    small, large = ShapesDataset(500, 32, seed=3), ShapesDataset(500, 32, seed=3, variant="shapes-large")
    assert torch.equal(small.labels, large.labels) and large.variant == "shapes-large"
    (lo_s, hi_s), (lo_l, hi_l) = SHAPE_RADII["shapes"], SHAPE_RADII["shapes-large"]
    area_ratio = ((lo_l + hi_l) / (lo_s + hi_s)) ** 2  # ~2.2
    measured = _foreground_fraction(large.images) / _foreground_fraction(small.images)
    assert measured > 1.6 and abs(measured - area_ratio) < 0.4
    built = make_dataset(DataConfig(dataset="shapes-large", num_train=500, seed=3, hflip=False))
    assert torch.equal(built.images_uint8, large.images_uint8)
    # the notebooks' examples follow the preset's variant (the original shapes for other data)
    assert torch.equal(shapes_like(DataConfig(dataset="shapes-large", seed=3), 500, "train").images_uint8,
                       large.images_uint8)
    assert shapes_like(DataConfig(dataset="photos"), 4).variant == "shapes"


def test_photos_offline():
    p = sample_photos(48)
    assert p.shape == (len(PHOTO_NAMES), 3, 48, 48) and 0 <= p.min() and p.max() <= 1
    crops = PhotoCropDataset(10, 32, seed=0)
    img, label = crops[0]
    assert img.shape == (3, 32, 32) and 0 <= label < len(PHOTO_NAMES)


def test_center_crop_matches_adm_rule():
    im = Image.new("RGB", (1000, 600), "red")
    arr = center_crop_arr(im, 256)
    assert arr.shape == (256, 256, 3)


def test_loader_batches_and_reproducible_order():
    cfg = DataConfig(num_train=64, num_val=16, hflip=False)
    l1 = make_loader(cfg, "train", batch_size=16, seed=3)
    l2 = make_loader(cfg, "train", batch_size=16, seed=3)
    (x1, y1), (x2, y2) = next(iter(l1)), next(iter(l2))
    assert x1.shape == (16, 3, 32, 32) and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    val = make_loader(cfg, "val", batch_size=16)
    assert sum(x.shape[0] for x, _ in val) == 16


def test_imagefolder_layout_skips_bad_files(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (80, 60), (i * 50, 10, 200)).save(tmp_path / "train" / c / f"{i}.png")
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"not an image")
    ds = make_dataset(DataConfig(dataset="imagefolder", data_dir=str(tmp_path), img_size=32))
    assert ds.num_classes == 2 and len(ds) == 7
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        imgs = [ds[i][0] for i in range(len(ds))]
    assert all(i.shape == (3, 32, 32) for i in imgs) and ds.skipped == 1
    strict = ImageFolderDataset(tmp_path / "train", 32, on_bad_image="error")
    bad = [i for i, (p, _) in enumerate(strict.samples) if p.endswith("broken.png")][0]
    with pytest.raises(DataError, match="broken.png"):
        strict[bad]


def test_missing_and_empty_data_dirs_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        make_dataset(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        make_dataset(DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "empty")))
    with pytest.raises(DataError, match="never downloads"):
        make_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path / "cifar")))


def test_loader_rejects_batch_larger_than_dataset():
    with pytest.raises(DataError, match="batch_size=128 is larger"):
        make_loader(DataConfig(num_train=16), "train", batch_size=128)
