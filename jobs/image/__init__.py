"""The local, Ray-free CLI (``python -m jobs.stylize_image``, ``stylize-image``): a few images on
this machine.
"""
