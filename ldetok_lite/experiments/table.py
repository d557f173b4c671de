"""The comparison's table, from measured rows: means and spreads over seeds, the paper's ratio
gFID(l-DeTok) / gFID(plain AE), the sweeps, and every output file (JSON, CSV, text, PNG).

Pure functions of the rows that ``compare.run_comparison`` writes to ``rows.jsonl``, so a
partial or finished run can be summarised again at any time (notebook 10).
"""

from __future__ import annotations

import csv
import json
import math
from io import StringIO
from pathlib import Path

import matplotlib.pyplot as plt

from ..io import read_jsonl, repo_root, write_jsonl_atomic, write_text_atomic
from ..presets import CONV_PREFIX, GENERATOR_FAMILIES, SWEEPS, TOKENIZER_ORDER, variant_name
from ..viz import save_figure

__all__ = ["PAPER_GFID", "PAPER_RATIOS", "PAIRS", "summarize", "summarize_sweeps", "format_table", "write_outputs",
           "plot_comparison", "plot_sweeps", "load_comparison", "load_first_comparison",
           "merge_comparisons"]

#: The paper's gFIDs (l-DeTok, baseline) behind its ratios: against its own no-noise baseline
#: and against MAR-VAE (paper, Tables 1 and 3).
PAPER_GFID = {
    "own no-noise baseline": {"MAR": (2.65, 3.31), "SiT": (5.50, 6.97)},
    "vs MAR-VAE": {"MAR": (2.43, 3.71), "RandomAR": (5.22, 11.78), "RasterAR": (4.46, 7.99),
                   "SiT": (5.13, 6.26), "DiT": (6.58, 8.20), "LightningDiT": (3.63, 3.98)},
}
PAPER_RATIOS = {k: {f: round(a / b, 3) for f, (a, b) in v.items()} for k, v in PAPER_GFID.items()}

#: the other ratios a comparison reports when it measured both variants: (target, baseline, the question)
PAIRS = (
    ("cnn-ldetok", "cnn-plain", "l-DeTok on the convolutional tokenizer (paper: MAR-B 3.32 -> 2.82)"),
    ("distill", "plain", "semantic distillation alone (VA-VAE style)"),
    ("ldetok-distill", "ldetok", "distillation on top of l-DeTok (paper: gains on SiT/DiT/LightningDiT, "
                                 "losses on RasterAR)"),
    ("distill", "ldetok", "distillation instead of l-DeTok (paper: VA-VAE vs l-DeTok, MAR 16.66 vs 2.43, "
                          "SiT 4.33 vs 5.13)"),
)
_VARIANT_ORDER = (*TOKENIZER_ORDER, "distill", "ldetok-distill")
_ORDER = (*_VARIANT_ORDER, *(CONV_PREFIX + v for v in _VARIANT_ORDER))


def _mean_std(values) -> tuple[float, float, int]:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return float("nan"), float("nan"), 0
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, s, len(v)


def summarize(rows: list[dict], baseline: str = "plain", target: str = "ldetok") -> dict:
    """The paper's table from measured rows (see :func:`run_comparison`).

    ``rows``: dicts with ``kind`` "tokenizer" (``variant``, ``seed``, ``rfid``, ``psnr``, ...) or
    "generator" (``family``, ``variant``, ``seed``, ``gfid``, ...). Returns ``{"tokenizers":
    {variant: {rfid_mean, rfid_std, psnr_mean, ..., n}}, "generators": {family: {variant:
    {gfid_mean, gfid_std, n, rfid_mean, ...}}}, "ratios": {family: {mean, std, n, per_seed,
    of_means}}, "paper_ratios", "beats_baseline"}``. The ratio gFID(target)/gFID(baseline) is
    taken per seed (paired) and then averaged; ``of_means`` is the ratio of the mean gFIDs.
    """
    toks: dict[str, dict] = {}
    by_tok: dict[str, list] = {}
    for r in rows:
        if r.get("kind") == "tokenizer":
            by_tok.setdefault(r["variant"], []).append(r)
    for v, rs in by_tok.items():
        d = {"n": len(rs), "seeds": sorted(r["seed"] for r in rs)}
        for key in ("rfid", "psnr", "ssim", "train_s", "noise_psnr", "neighbour_corr", "rfid_pretrain",
                    "psnr_pretrain", "finetune_s"):
            m, s, n = _mean_std(r.get(key) for r in rs)
            if n:
                d[f"{key}_mean"], d[f"{key}_std"] = m, s
        for key in ("gamma", "mask_ratio", "use_additive_noise"):
            if key in rs[0]:
                d[key] = rs[0][key]
        toks[v] = d
    gens: dict[str, dict] = {}
    cells: dict[tuple, list] = {}
    for r in rows:
        if r.get("kind") == "generator":
            cells.setdefault((r["family"], r["variant"]), []).append(r)
    for (fam, v), rs in cells.items():
        d = {"n": len(rs), "seeds": sorted(r["seed"] for r in rs)}
        for key in ("gfid", "is_mean", "class_accuracy", "train_s", "eval_s"):
            m, s, n = _mean_std(r.get(key) for r in rs)
            if n:
                d[f"{key}_mean"], d[f"{key}_std"] = m, s
        if v in toks and "rfid_mean" in toks[v]:
            d["rfid_mean"], d["rfid_std"] = toks[v]["rfid_mean"], toks[v]["rfid_std"]
        gens.setdefault(fam, {})[v] = d
    ratios = {fam: {**r, "paper_vs_own_baseline": PAPER_RATIOS["own no-noise baseline"].get(fam),
                    "paper_vs_mar_vae": PAPER_RATIOS["vs MAR-VAE"].get(fam)}
              for fam, r in _paired_ratios(gens, cells, target, baseline).items()}
    beats = {fam: (r["mean"] < 0.99) if r["n"] else None for fam, r in ratios.items()}
    pairs = {}
    for tgt, base, question in PAIRS:
        per_fam = _paired_ratios(gens, cells, tgt, base)
        if per_fam and (tgt, base) != (target, baseline):
            pairs[f"{tgt}/{base}"] = {"target": tgt, "baseline": base, "question": question, "generators": per_fam}
    return {"baseline": baseline, "target": target, "tokenizers": toks, "generators": gens, "ratios": ratios,
            "beats_baseline": beats, "pairs": pairs, "paper_ratios": PAPER_RATIOS, "paper_gfid": PAPER_GFID}


def _paired_ratios(gens: dict, cells: dict, target: str, baseline: str) -> dict:
    """{family: {mean, std, n, per_seed, of_means}} of gFID(target)/gFID(baseline), paired by seed."""
    out = {}
    for fam, per in gens.items():
        if baseline not in per or target not in per:
            continue
        base = {r["seed"]: r["gfid"] for r in cells[(fam, baseline)]}
        tgt = {r["seed"]: r["gfid"] for r in cells[(fam, target)]}
        per_seed = {s: tgt[s] / base[s] for s in sorted(set(base) & set(tgt)) if base[s] and base[s] > 0}
        m, s, n = _mean_std(per_seed.values())
        of_means = per[target]["gfid_mean"] / per[baseline]["gfid_mean"] if per[baseline].get("gfid_mean") else None
        out[fam] = {"mean": m, "std": s, "n": n, "per_seed": per_seed, "of_means": of_means}
    return out


def summarize_sweeps(rows: list[dict]) -> dict:
    """{sweep: {family: [{"value", "variant", "gfid_mean", "gfid_std", "rfid_mean", "n"}]}} from
    rows that carry ``sweep`` / ``sweep_value`` (generator rows) and tokenizer rows (rFID)."""
    tok_rfid: dict[str, list] = {}
    for r in rows:
        if r.get("kind") == "tokenizer":
            tok_rfid.setdefault(r["variant"], []).append(r.get("rfid"))
    out: dict[str, dict] = {}
    for sweep, points in SWEEPS.items():
        for fam in sorted({r["family"] for r in rows if r.get("kind") == "generator"}):
            series = []
            for value, (g, m, add) in points:
                v = variant_name(g, m, add)
                gf = [r["gfid"] for r in rows if r.get("kind") == "generator" and r["family"] == fam
                      and r["variant"] == v]
                if not gf:
                    continue
                gm, gs, n = _mean_std(gf)
                rm, rs, _ = _mean_std(tok_rfid.get(v, []))
                series.append({"value": value, "variant": v, "gfid_mean": gm, "gfid_std": gs, "n": n,
                               "rfid_mean": rm, "rfid_std": rs})
            if len(series) > 1:
                out.setdefault(sweep, {})[fam] = series
    return out


def _fmt(m, s=None, nd=2) -> str:
    if m is None or (isinstance(m, float) and not math.isfinite(m)):
        return "-"
    return f"{m:.{nd}f}" + (f" ± {s:.{nd}f}" if s else "")


def format_table(summary: dict) -> str:
    """The summary as plain text: tokenizers (rFID, PSNR), then gFID per generator and tokenizer
    with the tokenizer's rFID beside it, then the ratios next to the paper's."""
    ft = any("rfid_pretrain_mean" in d for d in summary["tokenizers"].values())
    lines = ["tokenizer        rFID              PSNR (dB)        train s   seeds"
             + ("   before the decoder fine-tune: rFID / PSNR" if ft else "")]
    for v in _ordered(summary["tokenizers"]):
        d = summary["tokenizers"][v]
        lines.append(f"{v:<16} {_fmt(d.get('rfid_mean'), d.get('rfid_std')):<17} "
                     f"{_fmt(d.get('psnr_mean'), d.get('psnr_std')):<16} {d.get('train_s_mean', 0):>7.0f}   {d['n']}"
                     + (f"       {_fmt(d.get('rfid_pretrain_mean'))} / {_fmt(d.get('psnr_pretrain_mean'))}"
                        if ft else ""))
    lines.append("")
    lines.append("generator     tokenizer        gFID              (rFID)    IS     class acc  train s  seeds")
    for fam in _ordered_fams(summary["generators"]):
        for v in _ordered(summary["generators"][fam]):
            d = summary["generators"][fam][v]
            lines.append(f"{fam:<13} {v:<16} {_fmt(d.get('gfid_mean'), d.get('gfid_std')):<17} "
                         f"({_fmt(d.get('rfid_mean'))}) {_fmt(d.get('is_mean_mean')):>8} "
                         f"{_fmt(d.get('class_accuracy_mean')):>8} {d.get('train_s_mean', 0):>8.0f}  {d['n']}")
    if summary["ratios"]:
        lines.append("")
        lines.append(f"gFID({summary['target']}) / gFID({summary['baseline']})   ours (mean ± std over seeds)   "
                     "paper (own baseline / vs MAR-VAE)   beats?")
        for fam in _ordered_fams(summary["ratios"]):
            r = summary["ratios"][fam]
            p1, p2 = r.get("paper_vs_own_baseline"), r.get("paper_vs_mar_vae")
            lines.append(f"{fam:<13} {_fmt(r['mean'], r['std'], 3):<22} n={r['n']}      "
                         f"{_fmt(p1, None, 3):>6} / {_fmt(p2, None, 3):<6}          "
                         f"{'yes' if summary['beats_baseline'].get(fam) else 'no'}")
    for key, pair in (summary.get("pairs") or {}).items():
        lines.append("")
        lines.append(f"gFID({pair['target']}) / gFID({pair['baseline']}): {pair['question']}")
        for fam in _ordered_fams(pair["generators"]):
            r = pair["generators"][fam]
            lines.append(f"{fam:<13} {_fmt(r['mean'], r['std'], 3):<22} n={r['n']}")
    return "\n".join(lines)


def _ordered(names) -> list[str]:
    return sorted(names, key=lambda v: (_ORDER.index(v) if v in _ORDER else 99, v))


def _ordered_fams(names) -> list[str]:
    return sorted(names, key=lambda f: (GENERATOR_FAMILIES.index(f) if f in GENERATOR_FAMILIES else 99, f))


# ============================================================================================
# Outputs
# ============================================================================================

def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        w.writerow(["" if (x is None or (isinstance(x, float) and not math.isfinite(x))) else
                    (round(x, 5) if isinstance(x, float) else x) for x in r])
    return buf.getvalue()


def write_outputs(summary: dict, out_dir, meta: dict | None = None, sweeps: dict | None = None) -> dict[str, Path]:
    """Write ``summary.json``, ``table.csv``, ``ratios.csv``, ``pairs.csv`` (:data:`PAIRS` measured),
    ``comparison.png`` (and with
    ``sweeps`` ``sweeps.csv`` / ``sweeps.png``, else ``tokenizers.csv`` always) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    payload = {"meta": meta or {}, **summary}
    if sweeps:
        payload["sweeps"] = sweeps
    paths["json"] = out / "summary.json"
    write_text_atomic(paths["json"], json.dumps(payload, indent=2, default=str))
    trows = []
    for fam in _ordered_fams(summary["generators"]):
        for v in _ordered(summary["generators"][fam]):
            d = summary["generators"][fam][v]
            ratio = summary["ratios"].get(fam, {}) if v == summary["target"] else {}
            trows.append([fam, v, d.get("gfid_mean"), d.get("gfid_std"), d["n"], d.get("rfid_mean"),
                          summary["tokenizers"].get(v, {}).get("psnr_mean"), d.get("is_mean_mean"),
                          d.get("class_accuracy_mean"), ratio.get("mean"), ratio.get("std"), d.get("train_s_mean"),
                          d.get("eval_s_mean")])
    paths["csv"] = out / "table.csv"
    write_text_atomic(paths["csv"], _csv_text(
        ["generator", "tokenizer", "gfid_mean", "gfid_std", "seeds", "tokenizer_rfid", "tokenizer_psnr", "is",
         "class_accuracy", "ratio_mean", "ratio_std", "train_s", "eval_s"], trows))
    paths["tokenizers_csv"] = out / "tokenizers.csv"
    write_text_atomic(paths["tokenizers_csv"], _csv_text(
        ["tokenizer", "gamma", "mask_ratio", "additive", "rfid_mean", "rfid_std", "psnr_mean", "psnr_std", "seeds",
         "train_s"],
        [[v, d.get("gamma"), d.get("mask_ratio"), d.get("use_additive_noise"), d.get("rfid_mean"), d.get("rfid_std"),
          d.get("psnr_mean"), d.get("psnr_std"), d["n"], d.get("train_s_mean")]
         for v, d in ((v, summary["tokenizers"][v]) for v in _ordered(summary["tokenizers"]))]))
    paths["ratios_csv"] = out / "ratios.csv"
    write_text_atomic(paths["ratios_csv"], _csv_text(
        ["generator", "ratio_mean", "ratio_std", "seeds", "ratio_of_means", "paper_vs_own_baseline", "paper_vs_mar_vae",
         "beats_baseline"],
        [[f, r["mean"], r["std"], r["n"], r["of_means"], r["paper_vs_own_baseline"], r["paper_vs_mar_vae"],
          summary["beats_baseline"].get(f)] for f, r in ((f, summary["ratios"][f])
                                                         for f in _ordered_fams(summary["ratios"]))]))
    paths["pairs_csv"] = out / "pairs.csv"
    write_text_atomic(paths["pairs_csv"], _csv_text(
        ["target", "baseline", "generator", "ratio_mean", "ratio_std", "seeds", "ratio_of_means", "question"],
        [[p["target"], p["baseline"], f, r["mean"], r["std"], r["n"], r["of_means"], p["question"]]
         for p in (summary.get("pairs") or {}).values() for f, r in ((f, p["generators"][f])
                                                                       for f in _ordered_fams(p["generators"]))]))
    paths["table_txt"] = out / "table.txt"
    write_text_atomic(paths["table_txt"], format_table(summary) + "\n")
    paths["png"] = save_figure(plot_comparison(summary), out / "comparison.png")
    if sweeps:
        paths["sweeps_csv"] = out / "sweeps.csv"
        write_text_atomic(paths["sweeps_csv"], _csv_text(
            ["sweep", "generator", "value", "tokenizer", "gfid_mean", "gfid_std", "seeds", "tokenizer_rfid"],
            [[s, f, p["value"], p["variant"], p["gfid_mean"], p["gfid_std"], p["n"], p["rfid_mean"]]
             for s, fams in sweeps.items() for f, pts in fams.items() for p in pts]))
        paths["sweeps_png"] = save_figure(plot_sweeps(sweeps), out / "sweeps.png")
    return paths


def plot_comparison(summary: dict):
    """Left: gFID per generator for each tokenizer (error bars: std over seeds; rFID in the
    legend). Right: the ratio gFID(l-DeTok)/gFID(plain) per generator next to the paper's, and the
    measured :data:`PAIRS`."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    fams = _ordered_fams(summary["generators"])
    variants = _ordered({v for f in fams for v in summary["generators"][f]})
    ax = axes[0]
    w = 0.8 / max(len(variants), 1)
    for i, v in enumerate(variants):
        xs, ys, es = [], [], []
        for j, f in enumerate(fams):
            d = summary["generators"][f].get(v)
            if d and "gfid_mean" in d:
                xs.append(j + (i - (len(variants) - 1) / 2) * w)
                ys.append(d["gfid_mean"])
                es.append(d.get("gfid_std", 0.0))
        rf = summary["tokenizers"].get(v, {}).get("rfid_mean")
        ax.bar(xs, ys, w, yerr=es, capsize=2, label=f"{v} (rFID {_fmt(rf, None, 1)})")
    ax.set_xticks(range(len(fams)), fams, rotation=20)
    ax.set_ylabel("gFID (lower is better)")
    ax.set_title("gFID per generator and tokenizer")
    if fams:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no generator measured yet", ha="center", va="center", transform=ax.transAxes)
    ax = axes[1]
    pairs = summary.get("pairs") or {}
    rfams = _ordered_fams(set(summary["ratios"]).union(*(p["generators"] for p in pairs.values())))
    if rfams:
        nan = {"mean": float("nan"), "std": 0.0}
        series = [(f"{summary['target']}/{summary['baseline']}", [summary["ratios"].get(f, nan) for f in rfams])]
        series += [(key, [p["generators"].get(f, nan) for f in rfams]) for key, p in pairs.items()]
        series += [(f"paper: {summary['target']} vs {name}",
                    [{"mean": PAPER_RATIOS[k].get(f) or float("nan"), "std": 0.0} for f in rfams])
                   for k, name in (("own no-noise baseline", "own baseline"), ("vs MAR-VAE", "MAR-VAE"))]
        w = 0.8 / len(series)
        for i, (label, vals) in enumerate(series):
            ax.bar([j + (i - (len(series) - 1) / 2) * w for j in range(len(rfams))], [v["mean"] for v in vals], w,
                   yerr=[v["std"] for v in vals], capsize=2, label=label, hatch="//" if label[:6] == "paper:" else None)
        x = range(len(rfams))
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(0.85, color="gray", ls="--", lw=0.8, label="goal 0.85")
        ax.set_xticks(list(x), rfams, rotation=20)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no ratio yet (needs plain and ldetok\nfor the same generator)", ha="center",
                va="center", transform=ax.transAxes)
    ax.set_title("gFID ratios (< 1: the first tokenizer wins)" if pairs else
                 f"gFID({summary['target']}) / gFID({summary['baseline']})  (< 1: {summary['target']} wins)")
    fig.tight_layout()
    return fig


def plot_sweeps(sweeps: dict):
    """gFID against γ, M and the noise type (one panel per sweep; rFID annotated)."""
    names = [s for s in SWEEPS if s in sweeps]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.2 * max(len(names), 1), 3.6), squeeze=False)
    for ax, s in zip(axes[0], names):
        for fam, pts in sweeps[s].items():
            xs = list(range(len(pts))) if s == "noise_type" else [p["value"] for p in pts]
            ax.errorbar(xs, [p["gfid_mean"] for p in pts], yerr=[p["gfid_std"] for p in pts], marker="o",
                        capsize=2, label=fam)
            for x, p in zip(xs, pts):
                ax.annotate(f"r{_fmt(p['rfid_mean'], None, 1)}", (x, p["gfid_mean"]), fontsize=6,
                            textcoords="offset points", xytext=(3, 3))
            if s == "noise_type":
                ax.set_xticks(xs, [str(p["value"]) for p in pts])
        ax.set_xlabel({"gamma": "noise strength γ (M = 0.7)", "mask_ratio": "max mask ratio M (γ = 3)",
                       "noise_type": "noise type (γ = 3, M = 0.7)"}[s])
        ax.set_ylabel("gFID (r = tokenizer rFID)")
        ax.legend(fontsize=7)
    fig.suptitle("the paper's sweeps (paper: best near γ = 3, M = 0.7-0.9, interpolative)")
    fig.tight_layout()
    return fig


def load_comparison(out_dir) -> dict | None:
    """A run directory's summary (recomputed from the newest plan's rows in ``rows.jsonl``, so partial
    runs work too); ``None`` when the directory holds no rows. Keys as :func:`summarize` plus ``sweeps``, ``meta``."""
    out = Path(out_dir)
    rows = read_jsonl(out / "rows.jsonl")
    if not rows:
        return None
    latest = rows[-1].get("plan_key")  # a folder reused with another plan keeps its old rows: read the newest plan's
    rows = [r for r in rows if r.get("plan_key") == latest]
    return {**summarize(rows), "sweeps": summarize_sweeps(rows), "meta": _meta(out), "rows": rows}


def _meta(out: Path) -> dict:
    """The ``meta`` of a comparison folder's ``summary.json`` (``{}`` when absent or unreadable)."""
    try:
        return json.loads((out / "summary.json").read_text()).get("meta", {})
    except (OSError, json.JSONDecodeError):
        return {}


def load_first_comparison(*dirs) -> tuple[Path | None, dict | None]:
    """The first of ``dirs`` (as given) that holds measured rows, with its summary
    (:func:`load_comparison`); relative folders are read under the checkout. ``(None, None)`` when
    none has rows. Notebooks 11 and 12 read a student's own run first, then the kit's measurement
    in ``results/``."""
    for d in dirs:
        summary = load_comparison(Path(d) if Path(d).is_absolute() else repo_root() / d)
        if summary is not None:
            return Path(d), summary
    return None, None


def _cell(row: dict) -> tuple:
    return row["kind"], row.get("family"), row["variant"], row["seed"]


def merge_comparisons(sources, out_dir) -> dict:
    """Join comparison folders measured apart (a share of the tokenizers or seeds each, on several
    machines or processes) into ``out_dir``: its ``rows.jsonl`` gains every cell it lacks, and the
    table files are written again. All rows must come from one plan (one ``plan_key``); a cell
    measured in two places keeps the first measurement (``out_dir``'s own, then ``sources`` in
    order). Returns the summary of :func:`load_comparison`."""
    out = Path(out_dir)
    rows = read_jsonl(out / "rows.jsonl")
    plans = {r.get("plan_key") for r in rows}
    for src in sources:
        src_rows = read_jsonl(Path(src) / "rows.jsonl")
        if not src_rows:
            raise ValueError(f"merge source {src}: no rows.jsonl with measured rows")
        latest = src_rows[-1].get("plan_key")
        plans.add(latest)
        rows += [r for r in src_rows if r.get("plan_key") == latest]
    if len(plans) > 1:
        raise ValueError(f"merge: the folders were measured with different plans (plan_key {sorted(map(str, plans))});"
                         " only one plan's rows can share a table")
    kept, seen = [], set()
    for r in rows:
        if _cell(r) not in seen:
            seen.add(_cell(r))
            kept.append(r)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "rows.jsonl", kept)
    merged = load_comparison(out)
    # the recipe behind the rows (data, steps, overrides) from a source's summary, else the plan's name
    metas = (merged["meta"], *(_meta(Path(s)) for s in sources))  # out's own was read by load_comparison
    described = [m["plan"] for m in metas if isinstance(m.get("plan"), dict)]
    meta = {"merged_from": [str(s) for s in sources],
            "plan": described[0] if described else (kept[0].get("plan") if kept else None)}
    write_outputs({k: v for k, v in merged.items() if k not in ("sweeps", "meta", "rows")}, out, meta=meta,
                  sweeps=merged["sweeps"] or None)
    return merged
