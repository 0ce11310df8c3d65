# Test perplexity, bits per byte and BLEU/ROUGE for one finished run. Reruns when the run's
# weights, the eval settings or the eval code change; never retrains anything.


def eval_spec(wildcards):
    """The eval settings as canonical JSON (a plain str param; parsed and checked once, in Python).
    A run trained on the CPU is evaluated on the CPU, whatever the machine has."""
    settings = dict(config["eval"])  # counts are ints already (config.validate parses them once)
    settings["device"] = "cpu" if RUNS[wildcards.run].spec["accelerator"] == "cpu" else "auto"
    return json.dumps(settings, sort_keys=True)


rule evaluate:
    input:
        model="results/runs/{run}/model.pt",
        metrics="results/runs/{run}/metrics.json",
        test=f"{DATA}/test.bin",
        tokenizer=f"{DATA}/tokenizer.json",
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
    shell:
        "OMP_NUM_THREADS={threads} scalelab evaluate --run results/runs/{wildcards.run:q} --data results/data "
        "--spec {params.spec:q} > {log:q} 2>&1"
