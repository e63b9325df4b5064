"""What the Node-RED tests share besides fixtures."""

from __future__ import annotations

from dataclasses import dataclass

from labkit.stack.clients.nodered import NodeRedAdmin
from labkit.stack.services.nodered import NODERED_DIR

SETTINGS = NODERED_DIR / "settings.js"


@dataclass(frozen=True)
class NodeRedEndpoint:
    """Where the tests reach Node-RED, and as whom."""

    base_url: str
    username: str
    password: str

    def admin(self) -> NodeRedAdmin:
        return NodeRedAdmin(self.base_url, self.username, self.password)
