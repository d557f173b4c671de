"""The paper's baselines at full scale: released SD-VAE weights (diffusers format, made here with
random init) imported by notebook 20 and used by notebook 21 like any tokenizer run."""

import json
from pathlib import Path

import diffusers
import papermill as pm
import pytest
import torch

from ldetok_lite.assets import MissingWeightsError
from ldetok_lite.convert_vae import load_sd_vae
from ldetok_lite.experiments import fullscale
from ldetok_lite.pretrained import from_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def sd_vae_folder(tmp_path_factory) -> Path:
    """A small AutoencoderKL in SD-VAE's released layout (config.json + safetensors), 32 px → 16 × 16 × 4."""
    torch.manual_seed(3)
    vae = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32),
                                  layers_per_block=1, latent_channels=4,
                                  norm_num_groups=8, sample_size=32)
    folder = tmp_path_factory.mktemp("weights") / "sd-vae-ft-ema"
    vae.save_pretrained(folder)
    return folder


def test_import_baseline_makes_a_kit_checkpoint(sd_vae_folder, tmp_path):
    run_dir = fullscale.import_baseline("sd-vae", sd_vae_folder, tmp_path, log=lambda *_: None)
    tok, ref = from_pretrained(run_dir), load_sd_vae(sd_vae_folder)
    assert (tok.gamma, tok.mask_ratio, tok.grid_size, tok.token_channels) == (0.0, 0.0, 16, 4)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(tok.reconstruct(x), ref.reconstruct(x))
    said = []
    assert fullscale.import_baseline("sd-vae", sd_vae_folder, tmp_path, log=said.append) == run_dir
    assert "imported earlier" in said[0]
    with pytest.raises(MissingWeightsError, match="baseline_path.*kl16.ckpt"):
        fullscale.import_baseline("mar-vae", "", tmp_path / "other")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        fullscale.import_baseline("mar-vae", tmp_path / "kl16.ckpt", tmp_path / "other")
    with pytest.raises(ValueError, match="not a baseline"):
        fullscale.import_baseline("ldetok", sd_vae_folder, tmp_path / "other")


@pytest.mark.notebook
def test_notebooks_20_and_21_on_an_imported_baseline(sd_vae_folder, tmp_path):
    params = {"preset": "smoke", "interactive": False, "seed": 0, "cache_dir": str(tmp_path / "cache"),
              "variant": "sd-vae"}
    pm.execute_notebook(str(NOTEBOOKS / "20_full_tokenizer.ipynb"), str(tmp_path / "20.ipynb"), kernel_name="python3",
                        progress_bar=False, cwd=str(NOTEBOOKS),
                        parameters={**params, "out_dir": str(tmp_path / "20"), "baseline_path": str(sd_vae_folder)})
    s20 = json.loads((tmp_path / "20" / "summary.json").read_text())
    assert s20["tokenizer_dir"].endswith("baseline") and s20["steps"] == {}
    pm.execute_notebook(str(NOTEBOOKS / "21_full_generator.ipynb"), str(tmp_path / "21.ipynb"), kernel_name="python3",
                        progress_bar=False, cwd=str(NOTEBOOKS),
                        parameters={**params, "out_dir": str(tmp_path / "21"), "family": "SiT"})
    s21 = json.loads((tmp_path / "21" / "summary.json").read_text())
    assert Path(s21["tokenizer_dir"]) == Path(s20["tokenizer_dir"])  # found through notebook 20's pointer
