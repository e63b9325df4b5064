"""Node-RED integration: admin API client (runtime assets live in stack/nodered/)."""

from labkit.nodered.admin import DEPLOYMENT_TYPES, NodeRedAdmin, NodeRedError

__all__ = ["DEPLOYMENT_TYPES", "NodeRedAdmin", "NodeRedError"]
