"""``labkit status`` shows each running service's RSS and CPU, summed over its process tree."""

from __future__ import annotations

import json

from click.testing import CliRunner

from labkit.cli import main
from labkit.stack.usage import cpu_per_image_ms


def test_status_shows_rss_and_cpu_of_every_running_service(lab, ports):
    env = {"LABKIT_DATA_DIR": str(lab.ctx.config.data_dir), "LABKIT_PORT_OFFSET": str(lab.ctx.config.port_offset),
           "LABKIT_BACKEND": "native"}
    done = CliRunner().invoke(main, ["status", "--json"], env=env)
    assert done.exit_code == 0, done.output
    rows = [row for row in json.loads(done.stdout) if row["state"] == "up"]
    assert rows
    for row in rows:
        assert row["rss_mb"] > 0, row
        assert row["cpu_pct"] is not None and row["cpu_pct"] >= 0, row
    table = CliRunner().invoke(main, ["status"], env=env, terminal_width=200)
    assert "RSS MB" in table.stdout and "CPU %" in table.stdout


def test_cpu_per_image_is_the_difference_over_the_images_and_all_is_the_sum():
    before = {"nodered": 1.0, "faas": 0.5, "faas workers": 0.0, "kafka": 2.0}
    after = {"nodered": 2.0, "faas": 0.7, "faas workers": 0.0, "kafka": 2.1}
    assert cpu_per_image_ms(before, after, 100) == {"nodered": 10.0, "faas": 2.0, "kafka": 1.0, "all": 13.0}
    assert cpu_per_image_ms(before, after, 0) == {}
