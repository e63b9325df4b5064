"""The stack layer: configuration, secrets, the services, the backends that run them, and `Lab`, the handle on a running lab.

Nothing here knows about the pipeline, experiments or notebooks.
"""
