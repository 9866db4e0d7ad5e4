"""Benchmarks: question formats, answer parsers and metrics, one module per benchmark."""
