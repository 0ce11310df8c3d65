# The study report: figures, tables, a self-contained index.html, report.md and summary.txt.
# Included from the Snakefile after common.smk (RUN_IDS, code_fingerprint, log_path, config).
#
# The outputs come from the report's one registry (scalelab.report.registry, standard library
# only): every figure and table with a fixed name, marked for `snakemake --report` with its
# caption (src/scalelab/report/captions/, the same text the page shows) and its category. The
# figures are one folder: a figure the data cannot support is not written, so neither the page
# nor `snakemake --report` shows a placeholder for it. The settings
# (config `report:`) travel as one canonical JSON param, so changing one reruns the report. The
# log keeps the report's stdout; the terminal gets summary.txt from the Snakefile's onsuccess
# handler (scalelab.report.print_summary).
from scalelab.report.registry import figure_captions, rule_outputs
from scalelab.report.settings import ReportSettings
from scalelab.plan.resolved import settings_lines, study_settings

REPORT_DIR = "results/report"
REPORT_SETTINGS = study_settings(config)


# lint "conda environment or container" stays: one environment, `make install`'s (per-rule envs untested; README)
rule report:
    input:
        metrics="results/metrics.csv",
        fit="results/fit/fit.json",
        suggest="results/suggest/suggest.json",
        meta="results/data/meta.json",
        curves=expand("results/runs/{run}/curve.csv", run=RUN_IDS),
        evals=expand("results/runs/{run}/eval.json", run=RUN_IDS),  # the test tokens each run was scored on
        trunks=sorted(TRUNK_SEGMENTS.values()),  # WSD: each trunk segment's wall time, charged to one run
        stale=forced_by("results/report/summary.txt"),  # no file: forces the job when stale
        curve_laws=rules.curves.output.json if CURVES else [],  # fit.curves: the curve laws' forecast
    output:
        **rule_outputs(REPORT_DIR, report, directory),
    params:
        code=code_fingerprint("report"),  # editing the report package reruns this rule and nothing else
        spec=ReportSettings.from_spec(json.dumps(config.get("report") or {}), "config report").to_spec(),
        runs=lambda wildcards, input: os.path.dirname(os.path.dirname(input.curves[0])),  # results/runs
        out=lambda wildcards, output: os.path.dirname(output.html),  # results/report
        captions=figure_captions(),  # each figure's caption, for --report (captions/figure.rst)
        # The Study settings table (the config's order). Snakemake does not compare a param derived
        # from the output, and compares each `setting_i` line: a changed setting reruns the report with
        # a reason that names it ("grid.tokens = [...]"), not the whole object twice.
        settings=lambda wildcards, output: json.dumps(REPORT_SETTINGS),
        **{f"setting_{i}": line for i, line in enumerate(settings_lines(REPORT_SETTINGS))},
        trunks=json.dumps(TRUNK_SEGMENTS, sort_keys=True),  # run -> the trunk segment charged to it
    log:
        log_path("report"),
    shell:
        "scalelab report --metrics {input.metrics:q} --fit {input.fit:q} --runs {params.runs:q}"
        " --data-meta {input.meta:q} --suggest {input.suggest:q} --out {params.out:q} --spec {params.spec:q}"
        " --settings {params.settings:q} --trunk-segments {params.trunks:q}"
        + (" --curves {input.curve_laws:q}" if CURVES else "") + " > {log:q} 2>&1"
