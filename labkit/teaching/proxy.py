"""The lab's UIs under the Jupyter server's own URL, through jupyter-server-proxy.

On JupyterHub the student's browser is on another machine than the lab, so loopback links
cannot open. Each function here is a ``jupyter_serverproxy_servers`` entry point
(pyproject.toml): the Jupyter server calls it when it starts and proxies
``<base_url><name>/`` to a service labkit already runs (no ``command``: the proxy starts
nothing). The ports come from the lab's config (``LABKIT_*``), as for every other labkit call.

- ``nodered/``: the Node-RED editor, and the dashboard under ``nodered/dashboard/``;
- ``mailpit/``: Mailpit, which serves under that same path (its webroot is
  ``LABKIT_WEB_PREFIX`` + ``mailpit/``, the prefix defaulting to ``JUPYTERHUB_SERVICE_PREFIX``),
  so the proxy forwards the whole path.
"""

from __future__ import annotations

from typing import Any

from labkit.stack.config import load_config

DASHBOARD_PATH = "dashboard/pipeline"  # the flow's dashboard page, under Node-RED's root
# Where each UI opens under the Jupyter server's base URL (nb.links uses the same paths).
UI_PATHS = {"nodered": "nodered/", "dashboard": f"nodered/{DASHBOARD_PATH}", "mail": "mailpit/"}


def nodered() -> dict[str, Any]:
    """The Node-RED editor (and its dashboard), proxied at ``<base_url>nodered/``."""
    return {"port": load_config().port("nodered"), "timeout": 5, "new_browser_tab": True,
            "launcher_entry": {"title": "Node-RED editor"}}


def dashboard() -> dict[str, Any]:
    """A launcher entry for the pipeline's dashboard: Node-RED again, opened at its dashboard page."""
    return {"port": load_config().port("nodered"), "timeout": 5, "new_browser_tab": True,
            "launcher_entry": {"title": "Pipeline dashboard", "path_info": UI_PATHS["dashboard"]}}


def mailpit() -> dict[str, Any]:
    """Mailpit, proxied at ``<base_url>mailpit/`` with the whole path forwarded (its webroot)."""
    return {"port": load_config().port("mail-http"), "absolute_url": True, "timeout": 5,
            "new_browser_tab": True, "launcher_entry": {"title": "Mailpit (alert e-mails)"}}
