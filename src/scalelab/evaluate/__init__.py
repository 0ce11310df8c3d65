"""The evaluate and aggregate stages: each finished run scored on the test split, then one table.

- `command`: `scalelab evaluate`: test loss, perplexity and bits per byte of one run, and its outputs;
- `generation`: greedy generation with the key/value cache, its prompts, BLEU and ROUGE;
- `aggregate`: `scalelab aggregate`: every run's metrics and evaluation in results/metrics.csv.
"""
