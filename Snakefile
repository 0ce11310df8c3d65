# scalelab: a language-model scaling-law study as one Snakemake DAG.
#   corpus -> tokenize -> train (one job per grid point) -> evaluate -> aggregate -> fit -> report
# Run from the repository root: `snakemake --cores all`, or for a study in its own folder:
#   snakemake --directory studies/foo --configfile studies/foo/config.yaml
from snakemake.utils import min_version

min_version("9.0")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/report.smk"


localrules: all, aggregate


rule all:
    default_target: True
    input:
        "results/metrics.csv",
        "results/fit/fit.json",
        "results/report/index.html",
        f"{DATA}/meta.json",  # so a removed meta.json re-tokenizes (see scalelab.integrity)
        REBUILD,  # outputs of finished runs deleted since: exactly those runs are rebuilt


onstart:
    check_jobs_can_start()


onsuccess:
    from scalelab.report import print_summary

    print_summary("results/report", since=STARTED)
