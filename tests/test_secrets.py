"""Generated credentials: private, stable, and completed when an older lab lacks some."""

from __future__ import annotations

import json
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from labkit.errors import LabConfigError
from labkit.stack.secrets import SECRETS_FILE, LabSecrets, load_or_create


def test_first_use_writes_a_private_file_and_later_uses_read_it(tmp_path):
    created = load_or_create(tmp_path)
    path = tmp_path / SECRETS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(tmp_path).as_plain_dict() == created.as_plain_dict()


def test_the_action_has_an_account_of_its_own():
    s = LabSecrets.generate()
    assert s.action_access_key.get_secret_value() != s.s3_access_key.get_secret_value()
    assert s.action_secret_key.get_secret_value() != s.s3_secret_key.get_secret_value()
    assert s.action_secret_key.get_secret_value() in s.secret_values()  # masked in output like the others
    assert s.action_secret_key.get_secret_value() not in repr(s)


def test_an_older_file_keeps_its_secrets_and_gains_the_missing_ones(tmp_path):
    old = LabSecrets.generate().as_plain_dict()
    del old["action_access_key"], old["action_secret_key"]
    path = tmp_path / SECRETS_FILE
    path.write_text(json.dumps(old))
    path.chmod(0o644)
    upgraded = load_or_create(tmp_path).as_plain_dict()
    assert {k: upgraded[k] for k in old} == old
    assert upgraded["action_access_key"] and upgraded["action_secret_key"]
    assert json.loads(path.read_text()) == upgraded  # saved, so every later reader agrees
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_concurrent_first_uses_agree(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: load_or_create(tmp_path).as_plain_dict(), range(16)))
    assert all(r == results[0] for r in results)


def test_a_malformed_file_names_the_fix(tmp_path):
    (tmp_path / SECRETS_FILE).write_text("[1, 2]")
    with pytest.raises(LabConfigError, match="labkit down --wipe"):
        load_or_create(tmp_path)
