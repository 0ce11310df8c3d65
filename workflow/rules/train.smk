# One Lightning job per grid point. `params.spec` holds exactly the values that decide the run
# (shape, tokens, seed, train settings after overrides, data fingerprint) and `params.code` the
# code that decides its numbers, so a change to either reruns exactly the runs it touches. The
# job first looks in the run store (results/store): a run trained before with the same spec,
# code and data is restored, not retrained, even after Snakemake deleted its outputs.
# A `schedule: wsd` run is a cooldown branch: it also takes its family's trunk checkpoint at its
# branch point as input (rules/trunk.smk) and starts from it.


# lint "conda environment or container" stays: one environment, `make install`'s (per-rule envs untested; README)
rule train:
    input:
        unpack(branch_inputs),  # a WSD run's trunk checkpoint (rules/trunk.smk); nothing otherwise
        train=f"{DATA}/train.bin",
        val=f"{DATA}/val.bin",
        meta=f"{DATA}/meta.json",
    output:
        model="results/runs/{run}/model.pt",
        metrics="results/runs/{run}/metrics.json",
        curve="results/runs/{run}/curve.csv",
    params:
        spec=run_spec,
        code=run_code,  # code_fingerprint("train"), or "train_wsd" for a WSD run
    log:
        "logs/train/{run}.log",
    wildcard_constraints:
        run="[^/]+",
    threads: train_threads
    resources:
        gpu=train_gpus,
        runtime=train_runtime_min,
        mem_mb=train_mem_mb,
        tasks_per_node=train_tasks,  # one rank per device; cpus_per_task threads each
        cpus_per_task=train_cpus_per_task,
        mpi=train_launcher,  # srun for several ranks under Slurm, else empty
    shell:
        "{resources.mpi} scalelab train --spec {params.spec:q} --data results/data --out results/runs/{wildcards.run:q} "
        "--code {params.code:q} --store results/store --threads {resources.cpus_per_task} $SCALELAB_ALLOW_REPEAT "
        "--loggers \"$SCALELAB_LOGGERS\" --study \"$SCALELAB_STUDY\" > {log:q} 2>&1"
