"""scalelab: language-model scaling-law studies as one Snakemake workflow."""
__version__ = "0.1.0"
