# Every run's metrics in one table, then the scaling-law fits on it.

# A study's own scores (eval.extra, checked when the config loads) join metrics.csv and get laws too.
EXTRA_CSV = config["eval"].get("extra")


# lint "conda environment or container" stays: one environment, `make install`'s (per-rule envs untested; README)
rule aggregate:
    input:
        metrics=expand("results/runs/{run}/metrics.json", run=RUN_IDS),
        evals=expand("results/runs/{run}/eval.json", run=RUN_IDS),
        extra=[EXTRA_CSV] if EXTRA_CSV else [],
    output:
        "results/metrics.csv",
    params:
        code=code_fingerprint("aggregate"),
        sweep=json.dumps(SWEEP_KEYS),  # the swept keys: sweep_group, best_in_sweep and their columns
    log:
        log_path("aggregate"),
    localrule: True
    shell:
        "scalelab aggregate --out {output:q} --sweep {params.sweep:q} {input.metrics:q} > {log:q} 2>&1"
        # eval.extra: the study's own scores join metrics.csv (the command is unchanged without them)
        + (f" && python -m scalelab.config.extra_metrics {shlex.quote(EXTRA_CSV)} {{output:q}} >> {{log:q}} 2>&1"
           if EXTRA_CSV else "")


# Written on every fit, empty when their section is null (see fit.json's `<section>_why`).
FIT_TABLES = [
    "approach3", "bootstrap", "power_laws", "isoflop", "approach2", "allocation", "holdout", "excluded", "hyperparameters",
    "forms", "forms_bootstrap", "residuals", "metrics", "metric_forecasts", "metrics_bootstrap",
]
# The evaluation metrics that get a law each beside the loss (scalelab.fit.metric_laws).
EVAL_METRICS = ["test_bpb", "test_ppl", "bleu", "rouge1", "rouge2", "rougeL", *extra_columns(EXTRA_CSV)]


# lint "conda environment or container" stays: one environment, `make install`'s (per-rule envs untested; README)
rule fit:
    input:
        metrics=FIT_TABLE,  # results/metrics.csv, or with predicted endpoints results/curves/endpoints.csv
        stale=forced_by("results/fit/fit.json"),  # no file: forces the job when stale
        meta="results/data/meta.json",
    output:
        json="results/fit/fit.json",
        text="results/fit/fit.txt",
        tables=expand("results/fit/{table}.csv", table=FIT_TABLES),
    params:
        spec=fit_spec(),
        metrics=" ".join(EVAL_METRICS),
        code=code_fingerprint("fit"),
    log:
        log_path("fit"),
    threads: capped_cores(8)  # bootstrap workers; never the submitting machine's core count on a cluster
    resources:
        runtime=30,
        mem_mb=4000,
    shell:
        "scalelab fit {input.metrics:q} --out results/fit --spec {params.spec:q} --data-meta {input.meta:q} "
        "--workers {threads} --metrics {params.metrics} > {log:q} 2>&1"
