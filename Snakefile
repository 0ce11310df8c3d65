# scalelab: a language-model scaling-law study as one Snakemake DAG, defined in workflow/Snakefile.
# Run from the repository root: `snakemake --cores all`, or for a study in its own folder:
#   snakemake --directory studies/foo --configfile studies/foo/config.yaml
# Included this way, not with `include:`, which would drop the workflow's default target (rule all).
workflow.include("workflow/Snakefile", overwrite_default_target=True)
