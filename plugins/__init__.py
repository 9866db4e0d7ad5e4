"""The experiment side: world, models, benchmarks, methods, runner.

Only :mod:`plugins.api` is shared with the knowledge side (``site_gen``).
"""
