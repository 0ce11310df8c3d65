# The schedule-aware curve laws (scalelab.curves): fitted to every run's curve.csv and the WSD trunks'
# checkpoints, they predict each run's final loss from its lr schedule; the report draws the forecast.
# Asked for by `fit: {curves: true}` only: a study without it plans exactly the jobs it planned before.
# grid.trained_cooldowns (predicted endpoints) implies them: the runs not trained (PREDICTED) get their
# final target from the chosen law, with its 95 % interval, in results/curves/endpoints.csv, which the
# fit then reads instead of metrics.csv (rule endpoints below).
CURVES = bool(config["fit"].get("curves")) or bool(PREDICTED)
CURVES_DIR = "results/curves"
RUN_SPECS = json.dumps({run_id: run.spec for run_id, run in RUNS.items()}, sort_keys=True)  # every run's spec, built once for both rules


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
        specs=RUN_SPECS,  # what decides the forecasts
        target=config["fit"]["target"],
        runs=" ".join(RUNS),  # every run of the grid, trained or predicted (without PREDICTED: RUN_IDS)
        out=lambda wildcards, output: os.path.dirname(output.json),
        # predicted endpoints: the laws are fitted to the trained runs only (never to an older study's leftovers)
        **({"use": " ".join(RUN_IDS)} if PREDICTED else {}),
    log:
        log_path("curves"),
    resources:
        runtime=20,
        mem_mb=3000,
    shell:
        "scalelab curves . --out {params.out:q} --specs {params.specs:q} --target {params.target:q} --predict {params.runs}"
        + (" --use {params.use}" if PREDICTED else "") + " > {log:q} 2>&1"


# lint "conda environment or container" stays: one environment, `make install`'s (per-rule envs untested; README)
rule endpoints:
    input:
        metrics="results/metrics.csv",
        curves=rules.curves.output.json,
    output:
        ENDPOINTS,  # common.smk: FIT_TABLE under predicted endpoints
    params:
        code=code_fingerprint("curves"),
        specs=RUN_SPECS,  # a family's branch points
        predicted=" ".join(PREDICTED),
    log:
        log_path("endpoints"),
    localrule: True
    shell:
        "python -m scalelab.curves.endpoints {input.metrics:q} --curves {input.curves:q} --specs {params.specs:q}"
        " --predicted {params.predicted} --out {output:q} > {log:q} 2>&1"
