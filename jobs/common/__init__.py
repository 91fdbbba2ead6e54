"""What every program shares: storage (all S3 specifics), inputs (listing, manifests), settings
base, planning, the Ray runtime, metrics writing and the run's outcome.
"""
