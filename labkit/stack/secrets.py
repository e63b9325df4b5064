"""Generated credentials: created on the first ``up``, kept 0600, never printed."""

from __future__ import annotations

import json
import os
import secrets
import stat
import string
import uuid
from pathlib import Path

from pydantic import BaseModel, SecretStr

from labkit.core.files import atomic_write, locked
from labkit.errors import LabConfigError

SECRETS_FILE = "secrets.json"


class LabSecrets(BaseModel):
    """Credentials of one lab instance. ``SecretStr`` keeps them out of reprs and logs."""

    s3_access_key: SecretStr  # the store's root account: labkit, Node-RED
    s3_secret_key: SecretStr
    # The resize action's own store account, allowed only what it needs (labkit.pipeline.deploy.ACTION_GRANTS).
    action_access_key: SecretStr
    action_secret_key: SecretStr
    faas_auth: SecretStr  # OpenWhisk's "uuid:key" form
    nodered_user: str
    nodered_password: SecretStr
    nodered_credential_secret: SecretStr
    webhook_token: SecretStr

    @classmethod
    def generate(cls) -> "LabSecrets":
        return cls(
            s3_access_key=SecretStr("lab" + secrets.token_hex(8)),
            s3_secret_key=SecretStr(secrets.token_urlsafe(30)),
            action_access_key=SecretStr("action" + secrets.token_hex(8)),
            action_secret_key=SecretStr(secrets.token_urlsafe(30)),
            faas_auth=SecretStr(f"{uuid.uuid4()}:{_alphanumeric(64)}"),  # OpenWhisk's key shape
            nodered_user="labkit",
            nodered_password=SecretStr(secrets.token_urlsafe(24)),
            nodered_credential_secret=SecretStr(secrets.token_urlsafe(32)),
            webhook_token=SecretStr(secrets.token_urlsafe(24)),
        )

    def secret_values(self) -> list[str]:
        """Every secret value, for scrubbing output."""
        return [v.get_secret_value() for _, v in self if isinstance(v, SecretStr)]

    def as_plain_dict(self) -> dict[str, str]:
        return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in self}


def _alphanumeric(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def load_or_create(data_dir: Path) -> LabSecrets:
    """Return the lab's secrets, generating them (mode 0600) on first use.

    A file from an older labkit gets the secrets it lacks added (and saved), so a lab
    keeps its data and its other credentials. A lock makes concurrent callers agree.

    Raises:
        LabConfigError: the secrets file exists but is unreadable or malformed.
    """
    path = data_dir / SECRETS_FILE
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with locked(data_dir / (SECRETS_FILE + ".lock")):
        if not path.exists():
            created = LabSecrets.generate()
            _write_private(path, created)
            return created
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)  # someone loosened it; secrets stay private
        return _read(path)


def _read(path: Path) -> LabSecrets:
    try:
        stored = json.loads(path.read_text())
        missing = {k: v for k, v in LabSecrets.generate() if k not in stored}
        loaded = LabSecrets.model_validate({**stored, **missing})
    except (ValueError, TypeError) as e:
        raise LabConfigError(
            f"The secrets file {path} is malformed. Fix: run `labkit down --wipe` to start over "
            "with new credentials (this deletes the lab's data)."
        ) from e
    if missing:
        _write_private(path, loaded)
    return loaded


def _write_private(path: Path, value: LabSecrets) -> None:
    """Write atomically, 0600 from the first byte."""
    atomic_write(path, json.dumps(value.as_plain_dict()))


def make_private(data_dir: Path) -> list[Path]:
    """Make the lab's data dir its user's alone: the dir 0700, and no group or other bits on
    anything in it (what an older labkit or a looser umask left). What the services write from
    then on is private by their umask (:data:`labkit.stack.process.SERVICE_UMASK`).

    Returns:
        The paths whose mode was changed.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    changed = [data_dir] if _restrict(data_dir) else []
    for root, dirs, files in os.walk(data_dir):  # does not follow symlinks
        changed += [path for name in dirs + files if _restrict(path := Path(root) / name)]
    return changed


def _restrict(path: Path) -> bool:
    """Drop the group and other bits of ``path`` (not of a link's target); True when it had any."""
    try:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode) or not stat.S_IMODE(mode) & 0o077:
            return False
        os.chmod(path, stat.S_IMODE(mode) & 0o700)
    except FileNotFoundError:
        return False  # a service removed it meanwhile
    return True
