# Test perplexity, bits per byte and BLEU/ROUGE for one finished run. Reruns when the run's
# weights, the eval settings or the eval code change; never retrains anything.


def eval_args():
    e = config["eval"]
    args = [f"--task {e['task']}", f"--prompts {e['prompts']}", f"--prompt-tokens {e['prompt_tokens']}",
            f"--max-new-tokens {e['max_new_tokens']}", f"--batch-size {e['batch_size']}",
            f"--bleu-tokenize {e['bleu_tokenize']}"]
    if e["test_tokens"] is not None:
        args.append(f"--test-tokens {study.parse_count(e['test_tokens'], 'eval.test_tokens')}")
    return " ".join(args)


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
        args=eval_args(),
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
        "OMP_NUM_THREADS={threads} scalelab evaluate --run results/runs/{wildcards.run} --data {DATA} "
        "{params.args} > {log} 2>&1"
