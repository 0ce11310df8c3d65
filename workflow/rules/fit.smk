# Every run's metrics in one table, then the scaling-law fits on it.


rule aggregate:
    input:
        metrics=expand("results/runs/{run}/metrics.json", run=RUN_IDS),
        evals=expand("results/runs/{run}/eval.json", run=RUN_IDS),
    output:
        "results/metrics.csv",
    params:
        code=code_fingerprint("aggregate"),
    log:
        log_path("aggregate"),
    shell:
        "scalelab aggregate --out {output} {input.metrics} > {log} 2>&1"


def fit_args():
    f = config["fit"]
    total = f["params"] == "total"
    args = [f"--loss-col {f['target']}", f"--params-col {'params_total' if total else 'params'}",
            f"--flops-col {'flops_total' if total else 'flops'}", f"--bootstrap {f['bootstrap']}",
            f"--seed {f['seed']}", f"--holdout {f['holdout']}"]
    if f["predict_flops"]:
        budgets = [study.parse_count(c, "fit.predict_flops") for c in f["predict_flops"]]
        args.append("--predict-flops " + " ".join(f"{c:.6g}" for c in budgets))
    if config["grid"].get("isoflop"):
        budgets = [study.parse_count(c, "grid.isoflop.budgets") for c in config["grid"]["isoflop"]["budgets"]]
        args.append("--budgets " + " ".join(f"{c:.6g}" for c in budgets))
    return " ".join(args)


# Written on every fit, empty when their section is null (see fit.json's `<section>_why`).
FIT_TABLES = ["approach3", "bootstrap", "power_laws", "isoflop", "approach2", "allocation", "holdout", "excluded"]


rule fit:
    input:
        "results/metrics.csv",
    output:
        json="results/fit/fit.json",
        text="results/fit/fit.txt",
        tables=expand("results/fit/{table}.csv", table=FIT_TABLES),
    params:
        args=fit_args(),
        code=code_fingerprint("fit"),
    log:
        log_path("fit"),
    threads: capped_cores(8)  # bootstrap workers; never the submitting machine's core count on a cluster
    resources:
        runtime=30,
        mem_mb=4000,
    shell:
        "scalelab fit {input} --out results/fit {params.args} --workers {threads} > {log} 2>&1"
