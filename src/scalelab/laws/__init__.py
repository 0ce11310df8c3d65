"""Scaling laws as objects: the law forms, a fit read back, and the Python API over a study.

- `law`: the law forms (`FORMS`), the loss they predict and the compute-optimal allocation;
- `fitted`: a fit folder read back (`scalelab.load_fit`, `FittedLaw`);
- `fitjson`: the contract of fit.json (schemas/fit.schema.yaml);
- `study_results`: a finished study (`scalelab.load_study`, `scalelab.Study`);
- `synthetic`: synthetic loss ladders drawn from a known law, for tests and benchmarks.

A new law form goes in `law` (and its fit in `scalelab.fit.forms`). numpy and pandas only.
"""
