"""Mitigation methods, one module each, registered by name (see :mod:`plugins.methods.base`)."""
