"""Small helpers for the notebooks: record results for tests and reports, show links."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from IPython.display import Markdown, display

from labkit.stack.config import load_config
from labkit.stack.secrets import SECRETS_FILE
from labkit.teaching.proxy import DASHBOARD_PATH, UI_PATHS

RESULTS_ENV = "LABKIT_RESULTS_DIR"


def record(notebook: str, results_dir: str | os.PathLike | None = None, **values: Any) -> Path:
    """Merge ``values`` into ``<results_dir>/<notebook>.json``.

    Notebooks call this with the figures they found, so that tests and reports
    can check what a notebook produced rather than merely that it ran.
    """
    directory = Path(results_dir or os.environ.get(RESULTS_ENV, "results"))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{notebook}.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(values)
    path.write_text(json.dumps(current, indent=2, default=str))
    return path


def links(endpoints: dict[str, str], base_url: str | None = None, secrets_file: Path | None = None) -> None:
    """Show a clickable list of the lab's user interfaces, and where the Node-RED login is.

    Under a Jupyter server with a base URL (JupyterHub's ``/user/NAME/``, say) the UIs are
    linked through that server (jupyter-server-proxy, :mod:`labkit.teaching.proxy`), since the
    student's browser may be on another machine; on a laptop they are linked on loopback. The
    password itself is never shown: the output names the 0600 file and a command that prints
    it in the student's own terminal.

    Args:
        endpoints: ``lab.endpoints``.
        base_url: the Jupyter server's base URL; found by :func:`jupyter_base_url` when omitted.
        secrets_file: the lab's secrets file; the config's when omitted.
    """
    config = load_config()
    base = base_url if base_url is not None else jupyter_base_url()
    uis = ui_links(endpoints, base, mail_proxied=bool(base) and config.web_prefix == base)
    path = secrets_file or config.data_dir / SECRETS_FILE
    lines = [f"- [{name}]({url})" for name, url in uis.items() if url]
    lines.append(f"\nNode-RED login: user `labkit`; the password is in `{path}` (readable by you only). "
                 "Print it in a terminal (not in a notebook, whose outputs are kept): "
                 f"`python3 -c 'import json; print(json.load(open(\"{path}\"))[\"nodered_password\"])'`")
    display(Markdown("\n".join(lines)))


def ui_links(endpoints: dict[str, str], base: str | None, mail_proxied: bool = False) -> dict[str, str | None]:
    """The UIs' addresses: through the Jupyter server at ``base`` when there is one, else loopback.

    Mailpit goes through the server only when ``mail_proxied``: it serves under the prefix the
    lab was started with (``LABKIT_WEB_PREFIX``), which must be this server's base URL.
    """
    loopback = {
        "nodered": endpoints.get("nodered"),
        "dashboard": f"{endpoints['nodered']}/{DASHBOARD_PATH}" if "nodered" in endpoints else None,
        "mail": endpoints.get("mail"),
    }
    proxied = {k: f"{base}{UI_PATHS[k]}" for k in loopback if base and (k != "mail" or mail_proxied)}
    found = {**loopback, **proxied}
    return {
        "Node-RED editor": found["nodered"],
        "Pipeline dashboard": found["dashboard"],
        "Mailpit (alert e-mails)": found["mail"],
        "FaaS API (OpenWhisk REST)": f"{endpoints['faas']}/api/v1" if "faas" in endpoints and not base else None,
        "Toxiproxy API": f"{endpoints['toxiproxy']}/proxies" if "toxiproxy" in endpoints and not base else None,
    }


def jupyter_base_url() -> str | None:
    """The base URL of the Jupyter server this kernel runs under, when it is not the root.

    ``JUPYTERHUB_SERVICE_PREFIX`` on JupyterHub; else the ``base_url`` of the running server
    that started this kernel. None on a laptop (a server at ``/``, or no server at all).
    """
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or _parent_server_base_url()
    return prefix if prefix and prefix.strip("/") else None


def _parent_server_base_url() -> str | None:
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:
        return None
    parent = os.getppid()
    return next((s["base_url"] for s in list_running_servers() if s.get("pid") == parent), None)
