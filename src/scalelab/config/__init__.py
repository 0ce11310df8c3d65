"""The study's config: read, checked against the schema, and the typed settings of each stage.

- `load`: read config.yaml (duplicate keys, non-UTF-8 refused), validate it, fill the defaults;
- `schema`: the JSON schema (schemas/config.schema.yaml) and its one-line messages;
- `stage_settings`: the typed settings of evaluate, fit, suggest and report, each default once;
- `sweeps`: learning-rate and other sweeps, and a model's train settings after its overrides;
- `counts`: counts spelled `10M`, `2.5e9`, and the run id built from them.

A new setting goes here: its key and default in the schema, its field in `stage_settings` (or the
train settings in `sweeps`). Standard library and PyYAML only: imported at DAG-build time.
"""
