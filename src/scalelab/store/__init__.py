"""What a study keeps on disk: the run store, and the code fingerprints its keys use.

- `runs`: the run store (results/store): a run trained before is restored, not retrained;
- `fingerprint`: the code fingerprint of each stage, by content label, not by path;
- `disk`: disk use of a study's results, by part.

Standard library only: imported at DAG-build time.
"""
