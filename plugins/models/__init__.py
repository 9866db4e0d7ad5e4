"""Models: adapters that run Hugging Face checkpoints for the methods and benchmarks.

Import the adapter from :mod:`plugins.models.llava`; :mod:`plugins.models.batch` is torch-free.
"""
