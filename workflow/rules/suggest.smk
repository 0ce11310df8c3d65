# What to run next: the runs that would most narrow the interval of the compute-optimal N at the
# study's next budget (scalelab.suggest), with the config snippet that trains exactly them.
# Included from the Snakefile after fit.smk; the report shows its table and snippet.


# lint "conda environment or container" stays: one environment, `make install`'s (per-rule envs untested; README)
rule suggest:
    input:
        metrics=FIT_TABLE,  # the table the fit read (with predicted endpoints, theirs too)
        fit="results/fit/fit.json",
        bootstrap="results/fit/bootstrap.csv",
        stale=forced_by("results/suggest/suggest.json"),  # no file: forces the job when stale
        meta=f"{DATA}/meta.json",  # the train split's tokens bound a new D (unless data.allow_repeat)
        # predicted endpoints: a new D of a size the study ran costs its trunk extension (the curve law's error)
        curves="results/curves/curves.json" if PREDICTED else [],
    output:
        table="results/suggest/suggestions.csv",
        text="results/suggest/suggest.txt",
        snippet="results/suggest/snippet.yaml",
        json="results/suggest/suggest.json",
    params:
        spec=suggest_spec(),
        code=code_fingerprint("suggest"),
        fit=lambda wildcards, input: os.path.dirname(input.fit),
        out=lambda wildcards, output: os.path.dirname(output.json),
    log:
        log_path("suggest"),
    resources:
        runtime=10,
        mem_mb=2000,
    shell:
        "scalelab suggest {input.metrics:q} --fit {params.fit:q} --out {params.out:q} --spec {params.spec:q}"
        " --data-meta {input.meta:q} --or-explain" + (" --curves {input.curves:q}" if PREDICTED else "") + " > {log:q} 2>&1"
