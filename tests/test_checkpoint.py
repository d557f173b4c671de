"""Checkpoints: safetensors round trip, atomic writes, corrupt fallback, safe loading."""

import json

import pytest
import torch

from ldetok_lite import checkpoint as C
from ldetok_lite.io import FileContentError, UnsafeFileError, safe_torch_load
from ldetok_lite.pretrained import from_pretrained
from ldetok_lite.tokenizer import create_tokenizer


def _tok(seed=0, **kw):
    torch.manual_seed(seed)
    return create_tokenizer("detok_tiny", **kw)


def test_safetensors_round_trip_rebuilds_from_spec(tmp_path):
    m = _tok(gamma=1.5, mask_ratio=0.3)
    ema = {k: v + 1.0 for k, v in m.state_dict().items()}
    d = C.save_pretrained(m, tmp_path / "ck", ema_state=ema, config={"note": {"a": 1}}, step=7)
    assert (d / C.MANIFEST).is_file() and (d / C.MODEL_FILE).is_file()
    cfg = json.loads((d / C.CONFIG_FILE).read_text())
    assert cfg["spec"]["name"] == "detok_tiny" and cfg["step"] == 7 and cfg["configs"]["note"] == {"a": 1}
    online = from_pretrained(d, which="model")
    assert not online.training and online.gamma == 1.5 and online.mask_ratio == 0.3
    assert all(torch.equal(online.state_dict()[k], v) for k, v in m.state_dict().items())
    averaged = from_pretrained(d)  # which="ema" by default
    assert all(torch.equal(averaged.state_dict()[k], v) for k, v in ema.items())
    x = torch.rand(2, 3, 32, 32)
    m.eval()
    assert torch.equal(online.reconstruct(x), m.reconstruct(x))
    with pytest.raises(ValueError, match="which="):
        from_pretrained(d, which="best")


def test_run_dir_resolves_to_newest_complete_and_corrupt_falls_back(tmp_path):
    m1, m2 = _tok(1), _tok(2)
    C.save_pretrained(m1, C.checkpoint_dir(tmp_path, 10), ema_state=m1.state_dict())
    d2 = C.save_pretrained(m2, C.checkpoint_dir(tmp_path, 20), ema_state=m2.state_dict())
    assert C.latest_checkpoint(tmp_path) == d2
    # truncate the newest weights: detected, reported, previous one used
    f = d2 / C.MODEL_FILE
    f.write_bytes(f.read_bytes()[:100])
    msgs = []
    assert C.latest_checkpoint(tmp_path, log=msgs.append).name == "step_0000010"
    assert "truncated" in msgs[0]
    loaded = from_pretrained(tmp_path, which="model", log=msgs.append)
    assert torch.equal(loaded.state_dict()["decoder.mask_token"], m1.state_dict()["decoder.mask_token"])
    # same size but flipped bytes: the digest catches it
    d3 = C.save_pretrained(m2, C.checkpoint_dir(tmp_path, 30), ema_state=m2.state_dict())
    raw = bytearray((d3 / C.EMA_FILE).read_bytes())
    raw[-10] ^= 0xFF
    (d3 / C.EMA_FILE).write_bytes(bytes(raw))
    with pytest.raises(C.CheckpointError, match="corrupt"):
        C.verify_checkpoint(d3)
    # no manifest = an interrupted write
    (d2 / C.MANIFEST).unlink()
    with pytest.raises(C.CheckpointError, match="incomplete"):
        C.verify_checkpoint(d2)
    with pytest.raises(C.CheckpointError, match="no complete checkpoint"):
        C.resolve_checkpoint(_empty(tmp_path))


def _empty(tmp_path):
    p = tmp_path / "empty"
    p.mkdir()
    return p


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    m = _tok()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(C, "write_json_atomic", boom)
    with pytest.raises(OSError, match="disk full"):
        C.save_pretrained(m, C.checkpoint_dir(tmp_path, 1))
    assert list((tmp_path / C.CKPT_SUBDIR).iterdir()) == []


def test_pickle_payload_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    p = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(1)}, "x": Evil()}, p)
    with pytest.raises(UnsafeFileError, match="contains pickled code"):
        safe_torch_load(p)
    plain = tmp_path / "ok.pth"
    torch.save({"w": torch.ones(2), "n": 3, "t": (1, 2)}, plain)
    assert safe_torch_load(plain)["n"] == 3
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(FileContentError, match="cannot read"):
        safe_torch_load(garbage)


def test_weights_of_another_model_are_refused(tmp_path):
    d = C.save_pretrained(_tok(), tmp_path / "ck")
    other = create_tokenizer("detok_tiny", token_channels=4)
    with pytest.raises(C.CheckpointError, match="do not fit"):
        C.load_weights(other, d, which="model")


def test_prune_keeps_newest_and_cleans_temporaries(tmp_path):
    m = _tok()
    for s in (1, 2, 3):
        C.save_pretrained(m, C.checkpoint_dir(tmp_path, s))
    (tmp_path / C.CKPT_SUBDIR / "step_0000004.tmp123").mkdir()
    C.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in (tmp_path / C.CKPT_SUBDIR).iterdir()) == ["step_0000002", "step_0000003"]
