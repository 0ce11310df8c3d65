"""The evaluate and aggregate stages: each finished run scored on the test split, then one table.

- `command`: `scalelab evaluate`: test loss, perplexity, bits per byte, generation, BLEU and ROUGE;
- `aggregate`: `scalelab aggregate`: every run's metrics and evaluation in results/metrics.csv.
"""
