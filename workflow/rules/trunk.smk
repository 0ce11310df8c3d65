# WSD trunks (train.schedule: wsd; see scalelab.plan.wsd). A family (the runs that differ only in D)
# trains one constant-lr trunk, cut into jobs at its runs' branch points: the job for step k
# resumes from the previous branch point's checkpoint and writes results/trunks/<family>/step<k>.ckpt,
# which the train job of the run branching there (its cooldown) takes as input. `params.family`
# holds what decides the trunk (the family's spec) and `params.code` the code; the state at step k
# is kept in the trunk store (results/store/trunks/) under family + code + k, so a segment cut
# differently (a D inserted between two others) is restored, not retrained.


# lint "conda environment or container" stays: one environment, `make install`'s (per-rule envs untested; README)
rule trunk:
    input:
        unpack(trunk_inputs),
        train=f"{DATA}/train.bin",
        val=f"{DATA}/val.bin",
        meta=f"{DATA}/meta.json",
    output:
        ckpt="results/trunks/{family}/step{step}.ckpt",
        info="results/trunks/{family}/step{step}.json",
    params:
        family=trunk_family,
        start=trunk_start,
        code=TRAIN_WSD_CODE,
    log:
        "logs/trunk/{family}/step{step}.log",
    wildcard_constraints:
        family="[^/]+",
        step="[0-9]+",
    threads: 1
    resources:
        gpu=trunk_gpus,
        runtime=trunk_runtime_min,
        mem_mb=trunk_mem_mb,
        mpi="",  # one rank; the same value as train's, so that a WSD family can be one job group
    shell:
        "scalelab trunk --family {params.family:q} --step {wildcards.step} --start={params.start:q} "
        "--data results/data --out results/trunks/{wildcards.family:q}/step{wildcards.step}.ckpt "
        "--code {params.code:q} --store results/store --threads {threads} $SCALELAB_ALLOW_REPEAT > {log:q} 2>&1"
