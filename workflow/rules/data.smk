# corpus -> BPE tokenizer -> token memmaps. Reruns only when the data settings, the corpus
# files or the data code change; everything downstream follows.


# lint "conda environment or container" stays: one environment, `make install`'s (per-rule envs untested; README)
rule tokenize:
    input:
        tokenize_inputs,  # none; forces the job when meta.json disagrees with the config (common.smk)
    output:
        DATA_FILES,
    params:
        data=json.dumps(corpus.data_settings(config), sort_keys=True),
        corpus=corpus.corpus_fingerprint(config),
        code=TOKENIZE_CODE,  # code_fingerprint of "tokenize", "tokenize_chunked" or "tokenize_stream" (common.smk)
    log:
        log_path("tokenize"),
    threads: capped_cores(8)  # tokenizers' parallelism; a cluster's node, not the login node's cores
    resources:
        mem_mb=TOKENIZE_MEM_MB,  # grows with the corpus size (scalelab.plan.resources.tokenize_mem_mb)
        runtime=60,
    # REQUIRE (the tokens each split must hold for this grid) is checked but deliberately not a
    # param: growing the grid must not retokenize (and so retrain) anything. Once meta.json
    # exists, common.smk checks the grid against it at DAG-build time.
    shell:
        "scalelab tokenize --spec {params.data:q} --out results/data --require \"$SCALELAB_REQUIRE\" > {log:q} 2>&1"
