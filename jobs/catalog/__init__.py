"""The nightly catalog (``python -m jobs.catalog``, ``stylize-catalog``): an incremental run of the
batch job against a ledger, under a lease.
"""
