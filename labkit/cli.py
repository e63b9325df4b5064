"""The ``labkit`` command line."""

from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console
from rich.table import Table

from labkit.core.progress import Reporter
from labkit.errors import LabConfigError, LabError
from labkit.stack.backends import Backend, ServiceStatus, get_backend
from labkit.stack.backends.native import NativeBackend
from labkit.stack.context import LabContext
from labkit.stack.services import SERVICE_NAMES

EXIT_CONFIG, EXIT_SERVICE = 2, 1


def _backend() -> Backend:
    return get_backend(LabContext.from_env(), Reporter())


def one_line(message: object) -> str:
    """A message on one line: a terminal user, a CI log and a notebook all see it whole."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


class LabGroup(click.Group):
    """The ``labkit`` group: every error a user can cause ends as one line and a non-zero exit.

    - a :class:`LabConfigError` (the user must fix something) exits 2;
    - a :class:`ServiceError` or any other :class:`LabError` exits 1;
    - a usage error (unknown option, bad value) exits 2, naming the ``--help`` to read;
    - Ctrl-C exits 130;
    - anything else is a bug: one line, exit 1, and ``LABKIT_DEBUG=1`` shows the traceback.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort:
            self._fail("interrupted", 130)
        except click.ClickException as e:
            where = f"labkit {e.ctx.command_path.split(' ', 1)[1]}" if getattr(e, "ctx", None) and " " in \
                e.ctx.command_path else "labkit"
            self._fail(f"error: {one_line(e.format_message()).rstrip('.')}. Fix: see `{where} --help`.", EXIT_CONFIG)
        except LabConfigError as e:
            self._fail(f"error: {one_line(e)}", EXIT_CONFIG)
        except LabError as e:
            self._fail(f"error: {one_line(e)}", EXIT_SERVICE)
        except KeyboardInterrupt:
            self._fail("interrupted", 130)
        except Exception as e:  # noqa: BLE001 - the last line of defence against a traceback
            if os.environ.get("LABKIT_DEBUG"):
                raise
            self._fail(f"error: unexpected {type(e).__name__}: {one_line(e)}. Fix: this is a labkit bug; "
                       "run again with LABKIT_DEBUG=1 for the traceback and report it.", EXIT_SERVICE)

    @staticmethod
    def _fail(line: str, code: int) -> None:
        click.echo(line, err=True)
        sys.exit(code)


service_arg = click.argument("service", metavar="SERVICE")


@click.group(cls=LabGroup, help="Stand up, inspect and break the DIT247 pipeline lab.")
def main() -> None:
    """Entry point of the ``labkit`` command."""


@main.command(help="Fetch or build every service into the per-user cache (idempotent).")
@click.option("--force", is_flag=True, help="Rebuild even intact cache entries.")
def install(force: bool) -> None:
    backend = _backend()
    if not isinstance(backend, NativeBackend):
        raise LabConfigError("`labkit install` is for the native backend. Fix: unset LABKIT_BACKEND.")
    backend.install(force=force)


@main.command(help="Start every service that is not up yet, and wait until all are healthy.")
@click.option("--wipe", is_flag=True, help="Delete the lab's data first and start empty.")
def up(wipe: bool) -> None:
    rows = _backend().up(wipe=wipe)
    _print_table(rows)


@main.command(help="Stop every service. Data is kept unless --wipe is given.")
@click.option("--wipe", is_flag=True, help="Also delete the lab's data.")
def down(wipe: bool) -> None:
    _backend().down(wipe=wipe)


@main.command(help="Show each service's state, pid, ports, version and health.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(as_json: bool) -> None:
    from labkit.stack.usage import with_usage

    backend = _backend()
    rows = with_usage(backend, backend.status())
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        _print_table(rows)


@main.command(help=f"Print the last lines of a service's log. SERVICE is one of: {', '.join(SERVICE_NAMES)}.")
@service_arg
@click.option("-n", "--lines", default=50, show_default=True)
def logs(service: str, lines: int) -> None:
    click.echo(_backend().logs(service, lines))


def _service_verb(verb: str, doc: str) -> None:
    @main.command(name=verb, help=f"{doc} SERVICE is one of: {', '.join(SERVICE_NAMES)}.")
    @service_arg
    def command(service: str) -> None:
        getattr(_backend(), verb)(service)


for _verb, _doc in [("stop", "Stop one service."), ("start", "Start one service and wait until it is ready."),
                    ("restart", "Stop, then start, one service."), ("kill", "Kill -9 one service, like a crash."),
                    ("pause", "Freeze one service (SIGSTOP)."), ("resume", "Unfreeze a paused service (SIGCONT).")]:
    _service_verb(_verb, _doc)


def _print_table(rows: list[ServiceStatus]) -> None:
    table = Table("service", "state", "pid", "ports", "version", "health", "uptime", "RSS MB", "CPU %")
    for r in rows:
        ports = ",".join(str(p) for p in r.ports.values())
        health = "[green]healthy[/]" if r.healthy else "[red]unhealthy[/]" if r.state != "down" else "-"
        uptime = f"{r.uptime_s:.0f} s" if r.uptime_s is not None else "-"
        rss = f"{r.rss_mb:.0f}" if r.rss_mb is not None else "-"
        cpu = f"{r.cpu_pct:.1f}" if r.cpu_pct is not None else "-"
        table.add_row(r.name, r.state, str(r.pid or "-"), ports, r.version, health, uptime, rss, cpu)
    Console().print(table)


@main.group(help="The resize action, packaged for a real OpenWhisk.")
def action() -> None:
    """The ``labkit action`` verbs."""


@action.command(name="zip", help="Build the resize action's zip (__main__.py and a virtualenv/ with the libraries pinned "
                                 "in stack/actions/requirements.txt, from PyPI) for `wsk action update ... --kind "
                                 "python:3.11`; built once into the lab's cache, then copied to --out.")
@click.option("--out", "out", default="resize.zip", show_default=True, help="Where to write the zip.")
@click.option("--force", is_flag=True, help="Build again even when the cache has it.")
def action_zip(out: str, force: bool) -> None:
    from labkit.pipeline.action_zip import copy_zip, zip_layout
    from labkit.stack.config import load_config

    path, took_s = copy_zip(load_config().cache_dir, out, force=force)
    layout = zip_layout(path.read_bytes())
    pins = ", ".join(f"{name} {version}" for name, version in sorted(layout["packages"].items()))
    click.echo(f"{path} ({path.stat().st_size / 1e6:.1f} MB, {took_s:.1f} s): {layout['entry']} + virtualenv/ with {pins}")


@main.group(help="Helpers for a lab on the remote backend (LABKIT_BACKEND=remote, docs/scaling.md).")
def remote() -> None:
    """The ``labkit remote`` verbs."""


@remote.command(name="nodered-env", help="Write the environment the remote Node-RED runs the pipeline flow with (its "
                                          "endpoints and the lab's secrets) to an env file, mode 0600, for its operator "
                                          "to load (kubectl create secret generic ... --from-env-file). Prints no secret.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The env file to write.")
@click.option("--metrics-file", default=None, help="Where the remote Node-RED appends its metrics "
                                                   "[default: /data/metrics/metrics.jsonl].")
def remote_nodered_env(out: str, metrics_file: str | None) -> None:
    from pathlib import Path

    from labkit.stack.backends.remote import REMOTE_METRICS_FILE, RemoteBackend

    backend = _backend()
    if not isinstance(backend, RemoteBackend):
        raise LabConfigError("labkit remote nodered-env is for a remote lab. Fix: set LABKIT_BACKEND=remote and its "
                             "LABKIT_REMOTE_* endpoints (docs/scaling.md).")
    count = backend.write_nodered_env(Path(out), metrics_file or REMOTE_METRICS_FILE)
    click.echo(f"{out}: {count} settings (mode 0600; it holds the lab's secrets, never commit it). Load it with "
               f"kubectl create secret generic labkit-nodered --from-env-file={out}")


@main.command(help="Render the SLA report (HTML and PDF) of a run directory written by labkit.analysis.report.save_run.")
@click.argument("run_dir", metavar="RUN_DIR")
@click.option("--out", "out_dir", default="reports", show_default=True, help="Directory for the report files.")
@click.option("--threshold-s", type=float, default=None, help="SLA latency bound in seconds [default: LABKIT_SLA_THRESHOLD_S].")
def report(run_dir: str, out_dir: str, threshold_s: float | None) -> None:
    # Imported here so that matplotlib and friends load only for this command.
    from labkit.analysis.report import report_run

    for kind, path in report_run(run_dir, out_dir, threshold_s).items():
        click.echo(f"{kind}: {path}")


@main.command(help="Run the experiment declared in SPEC (a YAML file, or a name in stack/experiments/) on the "
                   "running lab, and write its run directory (results.csv, probes.csv, env.json).")
@click.argument("spec", metavar="SPEC")
@click.option("--out", "out_dir", default=None, help="Directory for run directories [default: $LABKIT_DATA_DIR/runs].")
@click.option("--report", "with_report", is_flag=True, help="Also render the SLA report (HTML and PDF).")
@click.option("--reports-dir", default="reports", show_default=True, help="Where --report writes.")
def run(spec: str, out_dir: str | None, with_report: bool, reports_dir: str) -> None:
    # Imported here so that the other commands start fast.
    from labkit.experiments.run import load_spec, run_experiment
    from labkit.stack.lab import Lab

    experiment = load_spec(spec)  # a bad file fails before anything is touched
    lab = Lab.from_env(reporter=Reporter())
    done = run_experiment(lab, experiment, out_dir or lab.ctx.config.data_dir / "runs")
    Console().print(done.accounting().to_string(index=False), markup=False, highlight=False)
    click.echo(f"run: {done.run_dir}")
    if with_report:
        for kind, path in done.report(lab, reports_dir).items():
            click.echo(f"{kind}: {path}")


@main.command(help="Send images through the running pipeline at a steady rate (Poisson arrivals), as background "
                   "load for an experiment or a demonstration; at the end it prints what came back. Ctrl-C stops "
                   "it early.")
@click.option("--rate", "rate_per_s", type=float, default=2.0, show_default=True, help="Images per second.")
@click.option("--duration", "duration_s", type=float, default=60.0, show_default=True, help="Seconds to run.")
@click.option("--images", type=int, default=None, help="Most images to send [default: 2 x rate x duration].")
@click.option("--prefix", default="load/", show_default=True, help="Key prefix of the uploads.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def load(rate_per_s: float, duration_s: float, images: int | None, prefix: str, no_progress: bool) -> None:
    import math
    import uuid

    from labkit.experiments.load import check_open_loop, run_open_loop
    from labkit.pipeline import deploy as pipeline
    from labkit.stack.lab import Lab

    cap = images if images is not None else max(1, math.ceil(2 * rate_per_s * duration_s))
    check_open_loop(rate_per_s, cap, duration_s)  # bad input is refused before the lab is touched
    lab = Lab.from_env(reporter=Reporter())
    pipeline.stand_up(lab)  # idempotent: a deployed flow is left alone
    try:
        table = run_open_loop(lab, rate_per_s, cap, duration_s, prefix=f"{prefix}{uuid.uuid4().hex[:8]}/",
                              progress=not no_progress)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
        return
    codes = table["status_code"].value_counts().to_dict()
    click.echo(f"sent {len(table)} images in {duration_s:g} s; status codes: {codes}")


@main.command(help="Run the lab's notebooks headless, in order (all of them, or the NAMEs given), against "
                   "the running lab; the executed copies and their recorded figures go to --out.")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--out", "out_dir", default="reports/notebooks", show_default=True)
def notebooks(names: tuple[str, ...], out_dir: str) -> None:
    from pathlib import Path

    from labkit.stack.lab import Lab
    from labkit.teaching.runner import run_all

    reporter = Reporter()
    lab = Lab.from_env(reporter=reporter)
    for path in run_all(lab, Path(out_dir).resolve(), reporter, only=list(names) or None):
        click.echo(f"executed: {path}")


@main.command(help="Account for every object in bucket dit247, by its current version: resized, stale (its output "
                   "is of an older version), dead-lettered (with the reason), pending (younger than --grace-s) or "
                   "LOST. Exits 1 when something is lost or stale; reconcile cures both.")
@click.option("--prefix", default="", help="Only keys starting with this (a run prefix).")
@click.option("--grace-s", type=float, default=None, help="Younger objects count as pending [default: 60].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def audit(prefix: str, grace_s: float | None, as_json: bool) -> None:
    from labkit.pipeline.audit import CURE, DEFAULT_GRACE_S, failure_message
    from labkit.pipeline.audit import audit as run_audit
    from labkit.stack.lab import Lab

    report = run_audit(Lab.from_env(), prefix=prefix, grace_s=DEFAULT_GRACE_S if grace_s is None else grace_s)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        table = Table("state", "objects")
        for state, n in report.counts.items():
            table.add_row(state, str(n))
        table.add_row("duplicates", str(len(report.duplicates)))
        table.add_row("resized, no metrics line", str(len(report.unrecorded)))
        table.add_row("superseded versions", str(sum(report.superseded.values())))
        Console().print(table)
        for key in report.lost:
            click.echo(f"lost: {key}")
        for key in report.stale:
            click.echo(f"stale: {key}")
        for key in report.unrecorded:
            click.echo(f"unrecorded: {key} (re-record: {CURE})")
    if not report.ok:
        click.echo(f"error: {failure_message(report)}", err=True)
        sys.exit(EXIT_SERVICE)


@main.command(help="The fault matrix: during an open-loop load, kill -9 each service and restart it, put 2 s of "
                   "latency then a 10 s blackhole on each hop, and restart the whole stack; after recovery and "
                   "reconciliation nothing may be lost. Prints one row per case (recovery times in seconds) and "
                   "exits 1 when a case lost images.")
@click.option("--scale", type=click.Choice(["ci", "full"]), default="ci", show_default=True,
              help="ci: 4 images/s (a few minutes); full: 10 images/s, about 200-300 images per case.")
@click.option("--case", "only", multiple=True, help="Run only this case (repeatable); default: every case.")
@click.option("--out", "out_dir", default=None, help="Where the run directory goes [default: <data dir>/runs].")
@click.option("--doc", type=click.Path(dir_okay=False), default=None,
              help="Also write the results table into this Markdown file (e.g. docs/reliability.md).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def reliability(scale: str, only: tuple[str, ...], out_dir: str | None, doc: str | None, no_progress: bool) -> None:
    from pathlib import Path

    from labkit.experiments.matrix import run_fault_matrix, write_doc
    from labkit.stack.lab import Lab

    lab = Lab.from_env()

    def say(case, row: dict) -> None:
        verdict = "ok" if row["passed"] else "LOST" if row["lost"] or row["pending"] else "SLOW"
        recovery = (f"recovery {row['recovery_s']} s" if row["recovered"]
                    else f"not recovered after {row['waited_s']} s")
        click.echo(f"{case.name:32} {verdict:4}  uploaded {row['uploaded']:3}  dead-lettered {row['dead_lettered']}  "
                   f"refused {row['refused']}  "
                   f"lost {row['lost']}  reconciled {row['reconciled']}  {recovery}  backlog {row['backlog_s']} s")

    done = run_fault_matrix(lab, scale, out_dir or lab.ctx.config.data_dir / "runs", only=list(only) or None,
                            progress=not no_progress, on_case=say)
    click.echo(f"run: {done.run_dir}")
    if doc:
        click.echo(f"doc: {write_doc(done, Path(doc))}")
    if not done.passed:
        click.echo("error: some cases lost images or did not recover in time; see summary.csv and results.csv in "
                   "the run directory.", err=True)
        sys.exit(EXIT_SERVICE)


@main.command(help="Benchmark the pipeline against the bare resize loop, side by side in one run, on the "
                   "running lab: bare throughput, open-loop rates, saturation. Prints the ratios and writes "
                   "JSON and a plot to --out.")
@click.option("--rates", default=None, help="Open-loop rates, images/s, comma-separated [default: 5,10,20,40].")
@click.option("--images-per-rate", type=int, default=None, help="Images at each rate [default: 100].")
@click.option("--saturation-images", type=int, default=None, help="Images of the closed-loop burst [default: 200].")
@click.option("--concurrency", type=int, default=None, help="Uploaders of the burst [default: 16].")
@click.option("--bare-images", type=int, default=None, help="Resizes of the bare loop [default: 300].")
@click.option("--processes", type=int, default=None, help="Processes of the bare loop [default: one per core].")
@click.option("--max-inflight", type=int, default=None, help="The flow's bound on events in flight [default: 8].")
@click.option("--warmup", type=int, default=None, help="Images sent before measuring [default: 8].")
@click.option("--seed", type=int, default=None, help="Seeds the images and arrivals [default: 0].")
@click.option("--quick", is_flag=True, help="Tiny parameters (CI smoke run); other options override them.")
@click.option("--out", "out_dir", default="bench/results", show_default=True, help="Directory for the JSON and PNG.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def bench(rates: str | None, images_per_rate: int | None, saturation_images: int | None, concurrency: int | None,
          bare_images: int | None, processes: int | None, max_inflight: int | None, warmup: int | None,
          seed: int | None, quick: bool, out_dir: str, no_progress: bool) -> None:
    from labkit.experiments.bench import BenchParams, parse_rates, run_bench
    from labkit.stack.lab import Lab

    given = {"images_per_rate": images_per_rate, "saturation_images": saturation_images,
             "saturation_concurrency": concurrency, "bare_images": bare_images, "processes": processes,
             "max_inflight": max_inflight, "warmup_images": warmup, "seed": seed}
    given = {k: v for k, v in given.items() if v is not None}
    if rates is not None:
        given["rates"] = parse_rates(rates)
    params = BenchParams.quick(**given) if quick else BenchParams(**given)  # bad input fails before any work
    reporter = Reporter()
    result = run_bench(Lab.from_env(reporter=reporter), params, out_dir, reporter, progress=not no_progress)
    click.echo(bench_report(result))
    click.echo(f"json: {result.json_path}")
    click.echo(f"plot: {result.plot_path}")


def bench_report(result) -> str:
    """What ``labkit bench`` prints: the per-rate table, the ratios, and the CPU per image of each process."""
    import pandas as pd

    from labkit.experiments.bench import cpu_table, ratio_table

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        return "\n".join([result.rates.drop(columns=["images"]).to_string(), ratio_table(result).to_string(),
                          "CPU per image at saturation:", cpu_table(result.data).to_string()])


from labkit.teaching.course_cli import course  # noqa: E402 - the group lives beside its module

main.add_command(course)

if __name__ == "__main__":
    main()
