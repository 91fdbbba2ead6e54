"""Training style networks on Ray Train (``python -m jobs.train``, ``stylize-train``).
"""
