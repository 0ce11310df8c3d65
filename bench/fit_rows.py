"""Benchmark: the fit's time and memory by the number of rows, which MAX_FIT_ROWS is set from.

    python bench/fit_rows.py [--rows 100 1000 10000] [--bootstrap 1000] [--workers 1]

Each size fits, in its own process (so peak RSS is that size's), `n` synthetic runs at random
model sizes (1e7..3e9) and token counts (1e8..1e11), losses from Hoffmann et al.'s (2022) law
times 1 % log-normal noise, with every default of `fit_all` but the bootstrap and the workers
given. Prints one line per size and, as the last line, one JSON object: rows -> wall s, peak MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def fit_once(n: int, bootstrap: int, workers: int) -> dict:
    from scalelab import fit  # first: it pins OpenBLAS to one thread before numpy and scipy load

    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    params = np.exp(rng.uniform(np.log(1e7), np.log(3e9), n))
    tokens = np.exp(rng.uniform(np.log(1e8), np.log(1e11), n))
    loss = (1.69 + 406.4 / params**0.34 + 410.7 / tokens**0.28) * np.exp(rng.normal(0, 0.01, n))
    df = pd.DataFrame({"run": [f"r{i}" for i in range(n)], "params": params, "tokens": tokens, "loss": loss})
    started = time.perf_counter()
    fit.fit_all(df, bootstrap=bootstrap, workers=workers)
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": round(wall, 1), "peak_mb": round(peak_mb)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: fit this many rows
    args = parser.parse_args()
    if args.one:
        print(json.dumps(fit_once(args.one, args.bootstrap, args.workers)))
        return
    results = {}
    for n in args.rows:
        command = [sys.executable, __file__, "--one", str(n), "--bootstrap", str(args.bootstrap)]
        out = subprocess.run([*command, "--workers", str(args.workers)], capture_output=True, text=True, check=True)
        results[n] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{n} rows: {results[n]['wall_s']} s, peak {results[n]['peak_mb']} MB", flush=True)
    print(json.dumps({"bootstrap": args.bootstrap, "workers": args.workers, "rows": results}))


if __name__ == "__main__":
    main()
