"""Mailpit's web UI on the native stack: the binary `labkit install` builds embeds the UI's
assets (built with npm from the pinned module's sources) and reports the pinned version."""

from __future__ import annotations

import shutil
import smtplib
import uuid
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from labkit.stack.lab import Lab
from labkit.stack.versions import pin
from tests.test_report import CHROMIUM_ARGS

pytestmark = pytest.mark.stack


def test_mail_ui_assets_are_served_and_the_version_is_the_pin(lab: Lab) -> None:
    base = lab.endpoints["mail"]
    for asset in ("/dist/app.js", "/dist/app.css"):
        answer = httpx.get(base + asset, timeout=5)
        assert answer.status_code == 200 and len(answer.content) > 10_000, (asset, answer.status_code)
    assert lab.mailbox().info()["Version"] == pin("mailpit")["version"]
    mail = next(row for row in lab.backend.status() if row.name == "mail")
    assert mail.version == pin("mailpit")["version"]  # what `labkit status` shows, as Mailpit reports it


def test_mail_ui_shows_a_message_in_a_browser(lab: Lab, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    subject = f"ui probe {uuid.uuid4().hex[:8]}"
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "lab@example.org", "student@example.org", subject
    message.set_content("shown in the UI")
    with smtplib.SMTP(*lab.backend.service("mail").smtp(), timeout=5) as smtp:
        smtp.send_message(message)

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(lab.endpoints["mail"] + "/")
            page.get_by_text(subject).first.wait_for(timeout=20_000)
            shot = tmp_path / "mailpit.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert errors == []
