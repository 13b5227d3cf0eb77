"""Developer tools that run as modules: ``python -m yoloquant.tools.vocabulary``."""
