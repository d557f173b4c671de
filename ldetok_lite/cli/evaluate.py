"""``ldetok-lite evaluate``: rFID/PSNR/SSIM of a tokenizer and gFID/IS of a generator.

    ldetok-lite evaluate --tokenizer runs/tok --preset tiny --num-images 1000 --out eval.json
    ldetok-lite evaluate --generator runs/gen --tokenizer runs/tok --cfg-scale 1.0 2.0 --steps 30

- rFID: reconstruct ``--num-images`` held-out images (posterior mean, no mask, no noise) and
  compare them with the originals; PSNR/SSIM are averaged per image (``ldetok_lite.metrics``).
- gFID/IS: class-balanced samples (the official label order), decoded by the tokenizer, against
  ``--ref-stats``: ``adm`` (ADM's ImageNet-256 statistics, the paper's), ``train`` (the training
  images' statistics, cached as an ADM-style ``.npz``) or a file. The preset's protocol
  (``presets.eval_protocol``) decides the guidance grid, the sampling steps and the counts: at
  ``full`` the family's official grid on 10 000 images, then 50 000 at the best scale and at 1.0
  (MAR at 256 iterations), as the official ``main_diffusion.py``. With the offline ``shapes-cnn``
  network the class accuracy of the samples is reported as well.
- Images become uint8 by the preset's rule (``--quantize``; ``truncate`` is the official code's).
Results go to ``--out`` as JSON (and are printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..checkpoint import CheckpointError, read_config
from ..config import SHAPES_DATASETS, DataConfig
from ..device import pick_device
from ..evaluation import EvaluateError, evaluate_protocol, evaluate_tokenizer, get_feature_net, load_fid_stats
from ..io import write_json_atomic
from ..presets import PRESET_NAMES, eval_protocol, load_preset
from ..pretrained import check_tokenizer_of, from_pretrained, load_latent_stats
from .errors import check_out_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokenizer", default=None, help="tokenizer checkpoint or run directory (rFID, PSNR, SSIM; "
                        "also decodes the generator's samples)")
    parser.add_argument("--generator", default=None, help="generator checkpoint or run directory (gFID, IS)")
    parser.add_argument("--preset", default="tiny", help=f"one of {', '.join(PRESET_NAMES)} (defaults for data "
                        "and evaluation when the checkpoint does not record them)")
    parser.add_argument("--num-images", type=int, default=None, help="images per metric (default: preset eval)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: preset eval.batch_size")
    parser.add_argument("--cfg-scale", "--cfg", dest="cfg_scales", type=float, nargs="+", default=None,
                        help="guidance scale(s), >= 1 (default: the preset's protocol)")
    parser.add_argument("--search-images", type=int, default=None,
                        help="images per guidance scale of the search; then --num-images at the best scale and at "
                             "1.0 (default: the preset's protocol, 10 000 at most)")
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps (0 = the family's default; default: preset generator)")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: preset)")
    parser.add_argument("--feature-net", choices=("shapes-cnn", "inception"), default=None,
                        help="shapes-cnn (offline, embedded data) | inception (default: preset eval.feature_net)")
    parser.add_argument("--inception-weights", default=None, help="path to the Inception-v3 FID weights")
    parser.add_argument("--extractor", choices=("smoke", "tiny"), default=None,
                        help="shapes-cnn training settings (default: smoke for the smoke preset, else tiny)")
    parser.add_argument("--ref-stats", default=None,
                        help="gFID reference: adm | train | an .npz with mu/sigma (default: preset eval.reference)")
    parser.add_argument("--which", choices=("ema", "model"), default="ema", help="which weights to load")
    parser.add_argument("--quantize", choices=("round", "truncate"), default=None,
                        help="float -> uint8 conversion (official code: truncate; default: preset eval.quantize)")
    parser.add_argument("--kid", action="store_true", help="also KID")
    parser.add_argument("--prc", action="store_true", help="also precision/recall")
    parser.add_argument("--data-dir", default=None, help="dataset root (torchvision / ImageFolder data)")
    parser.add_argument("--cache-dir", default=None, help="feature network and reference statistics cache")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results to this JSON file")
    parser.set_defaults(func=run)


def _fail(msg: str):
    raise EvaluateError(msg)


def _check_options(args) -> None:
    if not args.tokenizer and not args.generator:
        _fail("nothing to evaluate: pass --tokenizer DIR (rFID) and/or --generator DIR (gFID)")
    for flag in ("tokenizer", "generator"):
        d = getattr(args, flag)
        if d and not Path(d).is_dir():
            _fail(f"--{flag} {d!r} is not a directory (a checkpoint or run directory was expected)")
    if args.preset not in PRESET_NAMES:
        _fail(f"--preset {args.preset!r} is not known; allowed: {', '.join(PRESET_NAMES)}")
    if args.num_images is not None and args.num_images < 2:
        _fail(f"--num-images {args.num_images} must be >= 2 (FID needs a covariance)")
    if args.batch_size is not None and args.batch_size < 1:
        _fail(f"--batch-size {args.batch_size} must be >= 1")
    if args.cfg_scales is not None and any(c < 1.0 for c in args.cfg_scales):
        _fail(f"--cfg-scale {args.cfg_scales} is out of range; allowed >= 1 (1 = no guidance)")
    if args.steps is not None and args.steps < 0:
        _fail(f"--steps {args.steps} must be >= 0 (0 = the family's default)")
    if args.temperature is not None and not args.temperature > 0:
        _fail(f"--temperature {args.temperature} must be > 0")
    if args.ref_stats and args.ref_stats not in ("adm", "train"):
        if not Path(args.ref_stats).is_file():
            _fail(f"--ref-stats {args.ref_stats!r} does not exist; allowed: adm, train or the path of an .npz")
        try:  # a truncated or foreign file fails now, not after the samples are made
            load_fid_stats(args.ref_stats)
        except ValueError as e:
            _fail(f"--ref-stats: {e}")
    if args.out:
        check_out_file(args.out)
    if args.search_images is not None and args.search_images < 2:
        _fail(f"--search-images {args.search_images} must be >= 2 (FID needs a covariance)")


def _load(directory: str, kind: str, which: str, device):
    try:
        run_cfg = read_config(directory)
        spec = run_cfg.get("spec") or {}
        if spec.get("kind") != kind:
            _fail(f"{directory!r} holds a {spec.get('kind') or 'unknown'} checkpoint, not a {kind}")
        model = from_pretrained(directory, which=which, device=device)
    except CheckpointError as e:
        raise EvaluateError(f"cannot load the {kind} from {directory!r}: {e}") from None
    return model.eval(), run_cfg


def _data_config(args, preset, ckpt_cfg: dict | None) -> DataConfig:
    data = preset.data
    stored = ((ckpt_cfg or {}).get("configs") or {}).get("data")
    if isinstance(stored, dict):
        data = DataConfig.from_dict(stored)
    if args.data_dir:
        data = data.replace(data_dir=args.data_dir)
    return data.replace(hflip=False)


def _feature_net(args, preset, data: DataConfig):
    name = args.feature_net or preset.eval.feature_net
    if name == "shapes-cnn" and data.dataset not in SHAPES_DATASETS:
        _fail(f"--feature-net shapes-cnn only measures the embedded shapes data, not {data.dataset!r}; "
              "use --feature-net inception")
    extractor = args.extractor or ("smoke" if preset.name == "smoke" else "tiny")
    return get_feature_net(name, img_size=data.img_size, seed=data.seed, cache_dir=args.cache_dir,
                           extractor=extractor, inception_weights=args.inception_weights,
                           dataset=data.dataset)


def _protocol(args, preset, name: str, num_images: int, quantize: str):
    """The preset's protocol for generator ``name`` with the command line's changes."""
    protocol = eval_protocol(preset, name, num_images)
    changes: dict = {"quantize": quantize}
    if args.cfg_scales:
        changes["cfg_scales"] = tuple(args.cfg_scales)
    if args.steps is not None:
        changes["search_steps"] = changes["final_steps"] = args.steps or None
    if args.temperature is not None:
        changes["temperature"] = args.temperature
    if args.search_images is not None:
        changes["search_images"] = min(args.search_images, num_images)
    return dataclasses.replace(protocol, **changes)


def run(args) -> int:
    _check_options(args)
    preset = load_preset(args.preset)
    device = pick_device(args.device)
    num_images = args.num_images or preset.eval.num_images
    batch_size = args.batch_size or preset.eval.batch_size
    quantize = args.quantize or preset.eval.quantize
    results: dict = {"preset": preset.name, "num_images": num_images, "quantize": quantize, "seed": args.seed}

    gen_cfg = None
    generator = None
    tok_dir = args.tokenizer
    if args.generator:
        generator, gen_cfg = _load(args.generator, "generator", args.which, device)
        if not tok_dir:
            tok_dir = (((gen_cfg.get("configs") or {}).get("tokenizer_spec") or {}).get("checkpoint"))
            if not tok_dir or not Path(tok_dir).is_dir():
                _fail("the generator's samples need a tokenizer to decode them: pass --tokenizer DIR")
    tokenizer, tok_cfg = _load(tok_dir, "tokenizer", args.which, device)
    if generator is not None:
        try:  # a generator decoded by another tokenizer gives a meaningless gFID
            check_tokenizer_of(args.generator, tokenizer)
        except ValueError as e:
            _fail(f"{e} (--tokenizer {str(tok_dir)!r}, --which {args.which})")
    data = _data_config(args, preset, gen_cfg or tok_cfg)
    net = _feature_net(args, preset, data)
    results["feature_net"] = net.key
    results["data"] = {"dataset": data.dataset, "img_size": data.img_size, "seed": data.seed}

    if args.tokenizer:
        print(f"[evaluate] tokenizer {args.tokenizer}: rFID/PSNR/SSIM on {num_images} held-out images")
        res = evaluate_tokenizer(tokenizer, data, net, num_images=num_images, batch_size=batch_size, seed=args.seed,
                                 kid=args.kid, prc=args.prc, quantize=quantize, device=device)
        results["tokenizer"] = {"dir": str(args.tokenizer), **res}
        print(f"[evaluate] rFID {res['rfid']:.3f}  PSNR {res['psnr']:.2f} dB"
              + (f"  SSIM {res['ssim']:.4f}" if res["ssim"] is not None else ""))
    if generator is not None:
        try:
            tokenizer.set_latent_stats(*load_latent_stats(args.generator))
        except Exception as e:  # older runs: the tokenizer's own statistics
            print(f"[evaluate] note: no latent statistics stored with the generator ({e}); using the tokenizer's")
        protocol = _protocol(args, preset, generator.spec["name"], num_images, quantize)
        print(f"[evaluate] generator {args.generator}: gFID/IS, guidance {list(protocol.cfg_scales)} on "
              f"{protocol.search_images} samples" + (f", then {protocol.final_images} at the best and at 1.0"
                                                     if protocol.final_images > protocol.search_images else ""))
        res = evaluate_protocol(generator, tokenizer, data, net, protocol, batch_size=batch_size,
                                reference=args.ref_stats, cache_dir=args.cache_dir, seed=args.seed, kid=args.kid,
                                prc=args.prc, device=device)
        rows = res["search"]
        results["generator"] = {"dir": str(args.generator), "tokenizer_dir": str(tok_dir), "results": rows,
                                "best": res["best"], "final": res["final"], "protocol": res["protocol"]}
    if args.out:
        out = write_json_atomic(args.out, results)
        print(f"[evaluate] results -> {out}")
    else:
        print(json.dumps(results, indent=2))
    return 0
