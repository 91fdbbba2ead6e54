"""The video job (``python -m jobs.stylize_video``, ``stylize-video``): segments on Ray actors,
temporally stable, joined per video with audio copied.
"""
