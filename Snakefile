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


# Local rules are marked per rule (`localrule: True`, here and on `aggregate`): a `localrules:`
# list keeps this file's names, which `use rule * from scalelab as scalelab_*` changes.


rule all:
    default_target: True
    localrule: True
    input:
        "results/metrics.csv",
        "results/fit/fit.json",
        "results/report/index.html",


onsuccess:
    from scalelab.report import print_summary  # here, not at the top: matplotlib is slow to import

    print_summary("results/report")
