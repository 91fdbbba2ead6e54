"""Stylisation methods: one module each, registered in :mod:`stylize_core.registry`."""
