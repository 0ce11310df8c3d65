"""The data stage: the corpus, checked and fingerprinted, tokenized into token memmaps.

- `corpus`: which files or Hugging Face dataset a study reads, its fingerprint and token budget;
- `corpus_check`: each corpus file checked before any job (one line naming the file);
- `chunking`: text files over data.source.max_document_bytes, split into documents;
- `hfdisk`: a Hugging Face dataset saved with `save_to_disk`, read as a data source;
- `tokenize`: `scalelab tokenize`, the BPE tokenizer and the train/val/test memmaps.

A new data source or corpus check goes here. `corpus` and `corpus_check` are read at DAG-build time.
"""
