"""Small helpers for the notebooks: record results for tests and reports, show links."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from IPython.display import Markdown, display

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


def links(endpoints: dict[str, str]) -> None:
    """Show a clickable list of the lab's user interfaces (no credentials in it)."""
    uis = {
        "Node-RED editor (log in with `labkit` and the password in secrets.json)": endpoints.get("nodered"),
        "Pipeline dashboard": f"{endpoints['nodered']}/dashboard" if "nodered" in endpoints else None,
        "Mailpit (alert e-mails)": endpoints.get("mail"),
        "FaaS API (OpenWhisk REST)": f"{endpoints['faas']}/api/v1" if "faas" in endpoints else None,
        "Toxiproxy API": f"{endpoints['toxiproxy']}/proxies" if "toxiproxy" in endpoints else None,
    }
    lines = [f"- [{name}]({url})" for name, url in uis.items() if url]
    display(Markdown("\n".join(lines)))
