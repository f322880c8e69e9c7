"""``verify --mlc`` over every shipped recipe and the targets MLC-LLM's apps run on: each recipe
compiled (``mlcbuild compile --json --allow-over-budget``, one cache for the sweep), then its
artifact checked against MLC-LLM's contract (:func:`mlcbuild.artifacts.mlc_contract.check_artifact`:
function table and arity from the library's bytes, ``_metadata``, chat config, system-lib
prefix). Writes benches/results/mlc_verify_sweep.json: per build the missing pieces (MLC's
engine or app would stop) and the notes.

    .venv/bin/python benches/mlc_verify_sweep.py                       # recipes/*.toml x host,s24,pixel8,iphone15pro
    .venv/bin/python benches/mlc_verify_sweep.py --recipes recipes/llama32-3b.toml --targets s24
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from results_io import write_results

from mlcbuild.artifacts.mlc_contract import CONTRACT, check_artifact

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--recipes", nargs="+", default=sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes").glob("*.toml"))
    )
    ap.add_argument("--targets", default="host,s24,pixel8,iphone15pro")
    ap.add_argument("--out", default="mlc_verify_sweep")
    args = ap.parse_args()
    rows = []
    out = REPO / "benches" / "results" / f"{args.out}.json"
    result = {"benchmark": "mlc_verify_sweep", "contract": CONTRACT, "results": rows,
              "command": "python benches/mlc_verify_sweep.py " + " ".join(sys.argv[1:])}  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        for recipe in args.recipes:
            for target in args.targets.split(","):
                cmd = [sys.executable, "-m", "mlcbuild.cli", "compile", recipe, "--target", target,
                       "--json", "--allow-over-budget", "--cache-dir", cache]  # fmt: skip
                p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                row = {"recipe": recipe, "target": target}
                if p.returncode != 0:
                    row["compile_error"] = (p.stderr or p.stdout).strip().splitlines()[-1:]
                else:
                    artifact = Path(json.loads(p.stdout.strip().splitlines()[-1])["artifact"])
                    findings = check_artifact(artifact)
                    row["missing"] = [f.what for f in findings if f.level == "missing"]
                    row["notes"] = [f.what for f in findings if f.level == "note"]
                rows.append(row)
                print(json.dumps(row), flush=True)
                write_results(out, result)


if __name__ == "__main__":
    main()
