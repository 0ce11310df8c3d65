# Test perplexity, bits per byte and BLEU/ROUGE for one finished run. Reruns when the run's
# weights, the eval settings or the eval code change; never retrains anything.


# lint "conda environment or container" stays: one environment, `make install`'s (per-rule envs untested; README)
rule evaluate:
    input:
        model="results/runs/{run}/model.pt",
        metrics="results/runs/{run}/metrics.json",
        test=f"{DATA}/test.bin",
        tokenizer=f"{DATA}/tokenizer.json",
        stale=forced_by("results/runs/{run}/eval.json"),  # no file: forces the job when stale
        meta=f"{DATA}/meta.json",
    output:
        eval="results/runs/{run}/eval.json",
        generations="results/runs/{run}/generations.jsonl",
    params:
        spec=eval_spec,
        code=code_fingerprint("evaluate"),
    log:
        "logs/evaluate/{run}.log",
    wildcard_constraints:
        run="[^/]+",
    threads: 1
    resources:
        gpu=evaluate_gpus,
        runtime=30,
        mem_mb=evaluate_mem_mb,
        mpi="",  # as train's single-rank value, so that a run's jobs can be one job group
    shell:
        "OMP_NUM_THREADS={threads} scalelab evaluate --run results/runs/{wildcards.run:q} --data results/data "
        "--spec {params.spec:q} > {log:q} 2>&1"


# Each run's evaluation to the trackers it trained with (train.logger: tensorboard, mlflow), in
# one job once every run is evaluated: TensorBoard's run folder and the training's MLflow run get
# test loss, perplexity, bits per byte, BLEU and ROUGE. A run's tracker that has them already is
# skipped, so a rerun (a new run evaluated) adds nothing twice. Only in a study that uses them.
TRACKERS = [name for name in loggers.logger_names(config) if name in ("tensorboard", "mlflow")]
TRACKED = ["results/trackers.json"] if TRACKERS else []


# lint "conda environment or container" stays: one environment, `make install`'s (per-rule envs untested; README)
rule track:
    input:
        evals=expand("results/runs/{run}/eval.json", run=RUN_IDS),
    output:
        "results/trackers.json",
    params:
        runs=lambda wildcards, input: [os.path.dirname(path) for path in input.evals],
    log:
        log_path("track"),
    localrule: True
    shell:
        "scalelab track --loggers \"$SCALELAB_LOGGERS\" --study \"$SCALELAB_STUDY\" --out {output:q}"
        " {params.runs:q} > {log:q} 2>&1"
