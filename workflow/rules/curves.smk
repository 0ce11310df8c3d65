# The schedule-aware curve laws (scalelab.curves): fitted to every run's curve.csv and the WSD trunks'
# checkpoints, they predict each run's final loss from its lr schedule; the report draws the forecast.
# Asked for by `fit: {curves: true}` only: a study without it plans exactly the jobs it planned before.
CURVES = bool(config["fit"].get("curves"))
CURVES_DIR = "results/curves"


# lint "conda environment or container" stays: one environment, `make install`'s (per-rule envs untested; README)
rule curves:
    input:
        curves=expand("results/runs/{run}/curve.csv", run=RUN_IDS),
        metrics=expand("results/runs/{run}/metrics.json", run=RUN_IDS),
        trunks=sorted({path.replace(".json", ".ckpt") for path in TRUNK_SEGMENTS.values()}),
    output:
        json=f"{CURVES_DIR}/curves.json",
        text=f"{CURVES_DIR}/curves.txt",
        predictions=f"{CURVES_DIR}/predictions.csv",
    params:
        code=code_fingerprint("curves"),
        specs=json.dumps({run_id: run.spec for run_id, run in RUNS.items()}, sort_keys=True),  # what decides the forecasts
        target=config["fit"]["target"],
        runs=" ".join(RUN_IDS),
        out=lambda wildcards, output: os.path.dirname(output.json),
    log:
        log_path("curves"),
    resources:
        runtime=20,
        mem_mb=3000,
    shell:
        "scalelab curves . --out {params.out:q} --specs {params.specs:q} --target {params.target:q} --predict {params.runs}"
        " > {log:q} 2>&1"
