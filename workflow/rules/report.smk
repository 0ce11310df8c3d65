# The study report: figures, tables, a self-contained index.html, report.md and summary.txt.
# Included from the Snakefile after common.smk (RUN_IDS, code_fingerprint, log_path, config).
#
# Every output has a fixed name (scalelab.report.output_paths lists the same files): a figure
# the data cannot support is still written, as a small image saying why. Figures and tables are
# marked for `snakemake --report results/report.zip`; captions live in workflow/report/ (paths
# below are relative to this file). The log keeps the report's stdout; the terminal gets
# summary.txt from the Snakefile's onsuccess handler (scalelab.report.print_summary).


rule report:
    input:
        metrics="results/metrics.csv",
        fit="results/fit/fit.json",
        meta="results/data/meta.json",
        curves=expand("results/runs/{run}/curve.csv", run=RUN_IDS),
    output:
        html=report("results/report/index.html", caption="../report/index.rst", category="Report"),
        markdown="results/report/report.md",
        summary="results/report/summary.txt",
        loss_vs_params=report("results/report/figures/loss_vs_params.png", caption="../report/loss_vs_params.rst", category="Scaling laws"),
        loss_vs_tokens=report("results/report/figures/loss_vs_tokens.png", caption="../report/loss_vs_tokens.rst", category="Scaling laws"),
        isoflop=report("results/report/figures/isoflop.png", caption="../report/isoflop.rst", category="Compute-optimal allocation"),
        frontier=report("results/report/figures/frontier.png", caption="../report/frontier.rst", category="Compute-optimal allocation"),
        training_curves=report("results/report/figures/training_curves.png", caption="../report/training_curves.rst", category="Training"),
        bleu_rouge=report("results/report/figures/bleu_rouge.png", caption="../report/bleu_rouge.rst", category="Generation quality"),
        holdout=report("results/report/figures/holdout.png", caption="../report/holdout.rst", category="Held-out check"),
        loss_vs_params_svg="results/report/figures/loss_vs_params.svg",
        loss_vs_tokens_svg="results/report/figures/loss_vs_tokens.svg",
        isoflop_svg="results/report/figures/isoflop.svg",
        frontier_svg="results/report/figures/frontier.svg",
        training_curves_svg="results/report/figures/training_curves.svg",
        bleu_rouge_svg="results/report/figures/bleu_rouge.svg",
        holdout_svg="results/report/figures/holdout.svg",
        fit_parameters=report("results/report/tables/fit_parameters.html", caption="../report/fit_parameters.rst", category="Tables"),
        isoflop_optima=report("results/report/tables/isoflop_optima.html", caption="../report/isoflop_optima.rst", category="Tables"),
        allocation=report("results/report/tables/allocation.html", caption="../report/allocation.rst", category="Tables"),
        holdout_table=report("results/report/tables/holdout.html", caption="../report/holdout_table.rst", category="Tables"),
        grid=report("results/report/tables/grid.html", caption="../report/grid.rst", category="Tables"),
        reproducibility=report("results/report/tables/reproducibility.html", caption="../report/reproducibility.rst", category="Tables"),
    params:
        code=code_fingerprint("report"),  # editing report.py reruns this rule and nothing else
        title=config.get("report", {}).get("title", "scalelab study"),
        runs="results/runs",
        out="results/report",
    log:
        log_path("report"),
    shell:
        "scalelab report --metrics {input.metrics:q} --fit {input.fit:q} --runs {params.runs:q}"
        " --data-meta {input.meta:q} --out {params.out:q} --title {params.title:q} > {log:q} 2>&1"
