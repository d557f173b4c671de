"""Experiments: the one model cache, the paper's comparison and its table, the full-scale stages
of notebooks 20-22, and the measurements behind ``ldetok-lite bench``.

- ``cache.py``: trained tokenizers and generators, trained once (:func:`get_tokenizer`, ...);
- ``compare.py`` / ``table.py``: the tokenizer × generator comparison and its outputs;
- ``fullscale.py``: resumable stages on one or many GPUs (torchrun);
- ``bench.py`` / ``speed.py``: step and sampling timings, img/s and MFU;
- ``reference.py`` / ``side_by_side.py``: the reference models shipped in ``reference/``, and
  generators drawn and measured alike (notebooks 05-09).
"""

from .cache import clear_cache, finetune_decoder, generator_dir, get_generator, get_tokenizer, tokenizer_dir
from .compare import CompareResult, run_comparison
from .table import PAPER_GFID, PAPER_RATIOS, format_table, load_comparison, summarize, summarize_sweeps, write_outputs

__all__ = ["get_tokenizer", "get_generator", "finetune_decoder", "tokenizer_dir", "generator_dir", "clear_cache",
           "run_comparison", "load_comparison", "CompareResult", "summarize", "summarize_sweeps", "format_table",
           "write_outputs", "PAPER_GFID", "PAPER_RATIOS"]
