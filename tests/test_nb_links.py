"""nb.links: the UIs through the Jupyter server's base URL when there is one, loopback on a
laptop, and the Node-RED login as a file and a command, never the password itself."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from IPython.display import Markdown

from labkit.stack.config import load_config
from labkit.teaching import nb, proxy

ENDPOINTS = {"nodered": "http://127.0.0.1:1880", "mail": "http://127.0.0.1:8025",
             "faas": "https://127.0.0.1:7070", "toxiproxy": "http://127.0.0.1:8474"}


def shown(monkeypatch: pytest.MonkeyPatch, **kwargs) -> str:
    out: list[str] = []
    monkeypatch.setattr(nb, "display", lambda md: out.append(md.data if isinstance(md, Markdown) else str(md)))
    nb.links(ENDPOINTS, **kwargs)
    return "\n".join(out)


def test_on_a_laptop_the_links_are_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    monkeypatch.setattr(nb, "_parent_server_base_url", lambda: "/")  # a local server at the root
    assert nb.jupyter_base_url() is None
    text = shown(monkeypatch)
    assert "(http://127.0.0.1:1880)" in text and "(http://127.0.0.1:1880/dashboard/pipeline)" in text
    assert "(http://127.0.0.1:8025)" in text and "(https://127.0.0.1:7070/api/v1)" in text


def test_on_jupyterhub_the_links_go_through_the_users_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    monkeypatch.delenv("LABKIT_WEB_PREFIX", raising=False)
    assert nb.jupyter_base_url() == "/user/ada/" and load_config().web_prefix == "/user/ada/"
    text = shown(monkeypatch)
    assert "(/user/ada/nodered/)" in text and "(/user/ada/nodered/dashboard/pipeline)" in text
    assert "(/user/ada/mailpit/)" in text
    assert "127.0.0.1" not in text  # nothing the student's browser cannot open


def test_mailpit_stays_on_loopback_when_the_lab_runs_under_another_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    monkeypatch.setenv("LABKIT_WEB_PREFIX", "")
    text = shown(monkeypatch, base_url="/user/bob/")
    assert "(/user/bob/nodered/)" in text and "(http://127.0.0.1:8025)" in text


def test_the_login_is_a_file_and_a_command_never_the_password(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    secrets_file = tmp_path / "secrets.json"
    text = shown(monkeypatch, base_url="", secrets_file=secrets_file)
    assert f"`{secrets_file}`" in text and "nodered_password" in text and "python3 -c" in text
    assert "password\": \"" not in text


def test_the_proxy_entries_are_registered_with_jupyter_server_proxy() -> None:
    names = {e.name: e.value for e in entry_points(group="jupyter_serverproxy_servers")}
    assert names == {"nodered": "labkit.teaching.proxy:nodered", "dashboard": "labkit.teaching.proxy:dashboard",
                     "mailpit": "labkit.teaching.proxy:mailpit"}
    config = load_config()
    assert proxy.nodered()["port"] == config.port("nodered") and "command" not in proxy.nodered()
    assert proxy.mailpit()["port"] == config.port("mail-http") and proxy.mailpit()["absolute_url"] is True
    assert proxy.dashboard()["launcher_entry"]["path_info"] == "nodered/dashboard/pipeline"
