"""The image batch job (``python -m jobs.stylize``, ``stylize``): inputs -> Ray Data -> stylize actor
pool -> outputs, metrics rows, run summary and contact sheet.
"""
