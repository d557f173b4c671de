"""Evaluation: images → features → statistics → FID / IS / KID / precision-recall.

- ``sources.py``: the images a metric sees (tensors, folders, datasets, samples made on the fly);
- ``feature_net.py``: the offline shapes network and Inception-v3;
- ``metrics.py``: :func:`compute_metrics`, the one route to every metric, and statistics files;
- ``evaluate.py``: rFID of a tokenizer, gFID of a generator (``ldetok-lite evaluate``).
"""

from .evaluate import (
    EvaluateError,
    eval_images,
    evaluate_generator,
    evaluate_protocol,
    evaluate_tokenizer,
    reference_stats,
    resolve_reference,
)
from .feature_net import (
    EXTRACTOR_PRESETS,
    FEATURE_NETS,
    SHAPES_EXTRACTOR,
    FeatureNet,
    ShapesCNN,
    default_cache_dir,
    extractor_info,
    extractor_settings,
    get_feature_net,
    get_shapes_extractor,
    load_shapes_extractor,
    preset_feature_net,
    train_shapes_extractor,
)
from .metrics import (
    class_accuracy,
    compute_fid_stats,
    compute_metrics,
    extract_features,
    features_to_metrics,
    fid_between_stats,
    fid_stats,
    load_fid_stats,
    save_fid_stats,
)
from .sources import (
    ImageStream,
    class_balanced_labels,
    generator_source,
    reconstruction_source,
    save_png_folder,
    to_uint8,
)

__all__ = [
    "compute_metrics", "class_accuracy", "extract_features", "features_to_metrics", "fid_stats", "compute_fid_stats",
    "save_fid_stats", "load_fid_stats", "fid_between_stats", "FeatureNet", "FEATURE_NETS", "get_feature_net",
    "ShapesCNN", "SHAPES_EXTRACTOR", "EXTRACTOR_PRESETS", "extractor_settings", "extractor_info",
    "get_shapes_extractor", "load_shapes_extractor", "preset_feature_net", "train_shapes_extractor",
    "default_cache_dir", "ImageStream",
    "to_uint8", "save_png_folder", "reconstruction_source", "generator_source", "class_balanced_labels",
    "EvaluateError", "eval_images", "evaluate_tokenizer", "evaluate_generator", "reference_stats",
    "resolve_reference", "evaluate_protocol",
]
