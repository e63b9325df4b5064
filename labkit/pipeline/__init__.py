"""The pipeline layer: deploy the flow and the action, upload images, read metrics, Kafka offsets, reconcile and audit.

Builds on `labkit.stack`; knows nothing of experiments or notebooks.
"""
