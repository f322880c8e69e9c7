"""Quality table: perplexity of the trained tiny model (quality/tiny-kjv) per quantization
scheme on held-out text, with file size and bits per weight.

    .venv/bin/python benches/quality.py [--schemes q0f32 q8f16_1 q4f16_1 q3f16_1] [--context 256]
    .venv/bin/python benches/quality.py --plot-only      # redraw the PNG from the JSON

Needs ``matplotlib`` for the plot (``make quality-deps``; without it the PNG is skipped).

Each scheme (and each mixed-precision recipe of :data:`MIXED`): a recipe of the checkpoint's config.json (GPTQ and AWQ schemes calibrated on
128 x 128 tokens of ``quality/kjv_calibration.txt``), ``mlcbuild convert`` + ``mlcbuild eval`` (host) over
``quality/kjv_heldout.txt``; the reference is ``transformers``' perplexity of the
unquantized float16 checkpoint over the same windows. Writes benches/results/quality.json
and benches/results/quality.png (perplexity against bits per weight).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benches"))

from results_io import write_results  # noqa: E402

MODEL = REPO / "quality" / "tiny-kjv"
HELDOUT = REPO / "quality" / "kjv_heldout.txt"


def mlcbuild(*args) -> dict:
    """Run the CLI with ``--json``; its last stdout line as a dict."""
    cmd = [sys.executable, "-c", "from mlcbuild.cli import main; main()", *map(str, args), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# mixed-precision rows (issue 7 item 6): name -> (base scheme, [quantization.overrides]); the
# tiny model ties its LM head to model.embed_tokens, which is kept in 8 bits
MIXED = {
    "q4f16_1+q8emb+f16ends": (
        "q4f16_1",
        {"model.embed_tokens": "q8f16_1", "model.layers.0.*": "q0f16", "model.layers.3.*": "q0f16"},
    ),
    "q3f16_1+q8emb+q4ends": (
        "q3f16_1",
        {"model.embed_tokens": "q8f16_1", "model.layers.0.*": "q4f16_1", "model.layers.3.*": "q4f16_1"},
    ),
}

CALIBRATION = {"text": str(REPO / "quality" / "kjv_calibration.txt"), "samples": 128, "seq_len": 128}


def recipe(tmp: Path, row: str) -> Path:
    """A recipe of the trained checkpoint for a scheme (calibrated ones: :data:`CALIBRATION`)
    or a :data:`MIXED` row."""
    import tomli_w

    from mlcbuild.quant import get_scheme

    scheme, overrides = MIXED.get(row, (row, None))

    cfg = {k: v for k, v in json.loads((MODEL / "config.json").read_text()).items() if v is not None}
    data = {
        "model": {"name": "tiny-kjv", "architecture": "llama", "source": str(MODEL), "config": cfg},
        "quantization": {"scheme": scheme}
        | ({"calibration": CALIBRATION} if get_scheme(scheme).calibration else {})
        | ({"overrides": overrides} if overrides else {}),
        "build": {"context_window_size": 256, "prefill_chunk_size": 64, "max_batch_size": 1},
    }
    p = tmp / f"tiny-kjv-{row}.toml"
    p.write_bytes(tomli_w.dumps(data).encode())
    return p


def weight_bytes(weights: Path) -> int:
    """Bytes of the parameter shards (``tensor-cache.json``'s records)."""
    index = json.loads((Path(weights) / "tensor-cache.json").read_text())
    return sum((Path(weights) / r["dataPath"]).stat().st_size for r in index["records"])


def plot(result: dict, path: Path, method=None) -> None:
    """Perplexity against bits per weight, round-to-nearest, GPTQ and AWQ schemes apart, to ``path``.

    ``method(scheme) -> str`` names a row's series (default: mixed, gptq, awq, smooth or
    round-to-nearest from the scheme name)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (make quality-deps): no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    rows = [r for r in result["results"] if r["bits_per_weight"] < 20]  # q0f32 off the scale

    def by_name(scheme: str) -> str:
        if scheme in MIXED:
            return "mixed"
        return next((m for m in ("gptq", "awq", "smooth") if scheme.endswith(m)), "round-to-nearest")

    method = method or by_name
    markers = (("round-to-nearest", "o"), ("gptq", "s"), ("awq", "^"), ("smooth", "v"), ("mixed", "D"),
               ("exact import", "*"))  # fmt: skip
    for name, marker in markers:
        pts = [r for r in rows if method(r["scheme"]) == name]
        if not pts:
            continue
        ax.plot([r["bits_per_weight"] for r in pts], [r["perplexity"] for r in pts], marker, label=name)
        for r in pts:
            ax.annotate(r.get("label", r["scheme"]), (r["bits_per_weight"], r["perplexity"]), fontsize=6, xytext=(4, 2),
                        textcoords="offset points")  # fmt: skip
    ax.axhline(result["reference_perplexity"], color="gray", linestyle="--", linewidth=0.8, label="unquantized")
    ppl = [r["perplexity"] for r in rows]
    if ppl and max(ppl) > 8 * min(ppl):  # a 3-bit outlier would flatten the rest
        ax.set_yscale("log")
    ax.set_xlabel("bits per weight (weights file x 8 / parameters)")
    ax.set_ylabel(f"perplexity ({result['tokens']} held-out tokens)")
    ax.set_title(result["model"])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--schemes",
        nargs="+",
        default=[
            "q0f32",
            "q0f16",
            "q8f16_1",
            "q4f16_1",
            "q4f16_gptq",
            "q4f16_awq",
            "q3f16_1",
            "q3f16_gptq",
            "q3f16_awq",
            "q8f16_smooth",
            *MIXED,
        ],
    )
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--out", default=str(REPO / "benches" / "results" / "quality.json"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from --out's JSON")
    args = ap.parse_args()
    png = Path(args.out).with_suffix(".png")
    if args.plot_only:
        plot(json.loads(Path(args.out).read_text()), png)
        return

    import torch
    import transformers

    from mlcbuild.runtime.evaluate import reference_perplexity, text_ids

    ids = text_ids(MODEL, HELDOUT)
    hf = transformers.AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    reference = reference_perplexity(hf, ids, args.context)
    params = json.loads((MODEL / "training.json").read_text())["parameters"]
    print(f"transformers (float16 weights): perplexity {reference:.4f} over {len(ids)} tokens")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in args.schemes:
            r = recipe(Path(tmp), scheme)
            weights = mlcbuild("convert", r, "--weights", MODEL)["weights"]
            ev = mlcbuild("eval", r, "--weights", weights, "--text", HELDOUT, "--context", args.context)
            size = weight_bytes(weights)
            row = {
                "scheme": scheme,
                **({"recipe": {"scheme": MIXED[scheme][0], "overrides": MIXED[scheme][1]}} if scheme in MIXED else {}),
                "perplexity": round(ev["perplexity"], 4),
                "delta_vs_unquantized": round(ev["perplexity"] - reference, 4),
                "weight_bytes": size,
                "bits_per_weight": round(size * 8 / params, 3),
                "tokens": ev["tokens"],
                "eval_seconds": round(ev["seconds"], 1),
            }
            rows.append(row)
            print(
                f"{scheme:22s} ppl {row['perplexity']:8.4f}  ({row['delta_vs_unquantized']:+.4f})  "
                f"{size / 2**20:6.2f} MiB  {row['bits_per_weight']:6.3f} bits/weight"
            )
    result = {
        "benchmark": "quality",
        "model": "quality/tiny-kjv (trained, 1.97M parameters)",
        "text": "quality/kjv_heldout.txt",
        "context": args.context,
        "tokens": len(ids),
        "reference_perplexity": round(reference, 4),
        "results": rows,
    }
    write_results(args.out, result)
    plot(result, png)


if __name__ == "__main__":
    main()
