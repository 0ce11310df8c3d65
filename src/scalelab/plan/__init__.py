"""What the DAG is built from, at DAG-build time: the grid, the WSD plan, job resources.

- `grid`: the runs a config asks for (`expand_grid`), each with its spec and run id;
- `shapes`: a model shape's parameter count and FLOPs per token (no torch);
- `wsd`: WSD families, their trunks and branch points;
- `resources`: each job's memory, run time, GPUs and CPUs;
- `grouping`: cluster job groups and array jobs, checked before any job;
- `cluster`: where a train process runs, and the environment jobs get;
- `resolved`: the study's settings as the report's table shows them;
- `integrity`: run outputs deleted, damaged or stale after a study finished;
- `check`: `scalelab check CONFIG`; `prune`: `scalelab prune`, bounding the stores;
- `workflow`: the `StudyPlan` the Snakefile is built from, and `snakemake_adapter`, the one place
  that touches Snakemake's internals.

Nothing here imports torch, Lightning or matplotlib (an import-linter contract).
"""
