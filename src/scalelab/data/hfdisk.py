"""A Hugging Face dataset kept on local disk with `save_to_disk`, as a `data.source.hf` folder.

`datasets.load_dataset` refuses such a folder ("... saved using `save_to_disk`. Please use
`load_from_disk` instead"). `as_loadable(data_cfg)` reads it with `datasets.load_from_disk`,
takes `data.source.split` when it holds a DatasetDict, and hands the tokenizer a parquet copy in
a temporary folder, which `load_dataset` reads like any folder of data files; the corpus record
still names the folder the config gave. `folder_kind(path)` tells a saved dataset from a folder
of data files, for the DAG-time check.

The tokens do not depend on which way the rows were read, so this lives outside the tokenize
code fingerprint (scalelab.store.fingerprint): adding it retokenized no study.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from ..errors import ScalelabError

DATA_FILE_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".json", ".csv", ".txt", ".gz", ".zst", ".bz2", ".xz")


def folder_kind(path: str | Path) -> str:
    """'saved' (save_to_disk: a Dataset or a DatasetDict), 'files' (data files load_dataset reads),
    'other' (a folder that is neither) or '' (not a local folder: a hub name)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return ""
    if (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    ):
        return "saved"
    if any(p.is_file() and any(p.name.endswith(s) for s in DATA_FILE_SUFFIXES) for p in path.rglob("*")):
        return "files"
    return "other"


def check_folder(source) -> None:
    """A `data.source.hf` that names a local folder must be a saved dataset or hold data files."""
    if isinstance(source, dict) and "hf" in source and folder_kind(source["hf"]) == "other":
        raise ScalelabError(
            f"config: data.source.hf: {source['hf']!r} is a folder that holds neither a dataset "
            "saved with save_to_disk (dataset_dict.json, or state.json and dataset_info.json) nor "
            "data files (.parquet, .jsonl, .json, .csv, .txt, .arrow)"
        )


@contextlib.contextmanager
def as_loadable(data_cfg: dict):
    """Yield a data section `load_dataset` can read: unchanged, or, for a save_to_disk folder,
    one whose `hf` is a parquet copy of the chosen split (removed afterwards)."""
    source = data_cfg.get("source")
    if not (isinstance(source, dict) and "hf" in source and folder_kind(source["hf"]) == "saved"):
        yield data_cfg
        return
    import datasets

    folder, split = str(Path(source["hf"]).expanduser()), source.get("split") or "train"
    try:
        saved = datasets.load_from_disk(folder)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ScalelabError(f"data.source.hf: could not load the saved dataset {folder!r} ({first})") from None
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise ScalelabError(
                f"data.source.split: {split!r} is not a split of the saved dataset {folder!r} "
                f"(it has {', '.join(sorted(saved))})"
            )
        saved = saved[split]
    with tempfile.TemporaryDirectory(prefix="scalelab-saved-") as tmp:
        saved.to_parquet(str(Path(tmp) / "data.parquet"))
        yield {**data_cfg, "source": {**source, "hf": tmp, "name": None, "split": "train", "revision": None}}
