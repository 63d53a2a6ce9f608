"""``python -m device``: the screening unit's command line. Each subcommand calls one public function."""

from __future__ import annotations

import sys

import click

from device.errors import ScreeningError
from device.notice import RESEARCH_NOTICE


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             help=f"Offline diabetic-retinopathy screening unit ({RESEARCH_NOTICE}).")
def cli() -> None:
    pass


@cli.command("preprocess")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", default="demo_output/preprocess", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the crops with their FOV outline.")
@click.option("--size", default=512, show_default=True, type=click.IntRange(32, 2048),
              help="Model input size in pixels.")
def preprocess_cmd(images: tuple[str, ...], out_dir: str, size: int) -> None:
    """Crop IMAGES to the field of view and write each crop with its FOV outline (PNG)."""
    from device.preprocess_files import preprocess_paths

    failures = 0
    for path, ok, line in preprocess_paths(list(images), out_dir, size):
        failures += not ok
        click.echo(f"{path}: {line}", err=not ok)
    sys.exit(1 if failures else 0)


@cli.command("screen")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image on stdout.")
@click.option("--model", default=None, help="Model bundle folder ('fake': deterministic stand-in, never for "
                                            "screening); default: the bundled model.")
def screen_cmd(paths: tuple[str, ...], as_json: bool, model: str | None) -> None:
    """Screen image files or folders (exit 0 when every image was screened)."""
    import json

    from device.screen_files import format_line, screen_paths

    failed = total = 0
    for record in screen_paths(list(paths), model):
        total += 1
        failed += "error" in record
        click.echo(json.dumps(record) if as_json else format_line(record))
    if total == 0:
        click.echo("error: no image files were found in the given paths; check them.", err=True)
        sys.exit(1)
    if failed:
        click.echo(f"error: {failed} of {total} images could not be screened (see their 'error').", err=True)
        sys.exit(1)


@cli.command("kiosk")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False),
              help="Unit config (TOML); default: the demo config.")
@click.option("--check-config", is_flag=True, help="Validate the config, print a summary and exit.")
@click.option("--model", default=None, help="Override the config's model: a bundle folder or 'fake'.")
def kiosk_cmd(config: str | None, check_config: bool, model: str | None) -> None:
    """Run the screening loop: Enter or the unit's button captures, 'n' next patient, 'q' quits."""
    from device.app import run_kiosk
    from device.config import describe, load_config

    if check_config:
        click.echo(describe(load_config(config)))
        click.echo("config OK")
        return
    summary = run_kiosk(config, model)
    click.echo(f"session {summary.session_id}: {summary.screenings} photographs, patients {summary.patients}")
    if summary.stopped:
        click.echo(f"error: {summary.stopped}", err=True)
        sys.exit(1)


@cli.command("selftest")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False),
              help="Unit config (TOML); default: the demo config.")
@click.option("--model", default=None, help="Override the config's model: a bundle folder or 'fake'.")
def selftest_cmd(config: str | None, model: str | None) -> None:
    """Check model, camera, display, microcontroller link and disk space; exit 1 if any fails."""
    from device.app import record_selftest, selftest
    from device.config import load_config

    cfg = load_config(config)
    checks = selftest(cfg, model)
    record_selftest(cfg, checks)
    for c in checks:
        click.echo(f"{'OK  ' if c.ok else 'FAIL'} {c.name:8s} {c.message}")
    sys.exit(0 if all(c.ok for c in checks) else 1)


@cli.command("demo")
@click.option("--out", "out_dir", default="demo_output", show_default=True, type=click.Path(file_okay=False),
              help="Output folder: screens/ (PNG), records/ (SQLite + images), session CSV and JSON.")
@click.option("--model", default=None, help="A bundle folder or 'fake'; default: the bundled model.")
@click.option("--patients", default=None, type=click.IntRange(1, 100), help="Patients to screen (default 4).")
def demo_cmd(out_dir: str, model: str | None, patients: int | None) -> None:
    """Screen both eyes of a few patients from samples/ with fakes for the hardware; write screens and records."""
    from device.app import run_demo

    s = run_demo(out_dir, model, patients)
    click.echo(f"Screened {s.screenings} photographs of {len(s.patients)} patients (session {s.session_id}).")
    for pid, verdict in s.patients.items():
        click.echo(f"  {pid}: {verdict.replace('_', '-')}")
    click.echo(f"Result screens: {out_dir}/screens/   records: {out_dir}/records/")
    click.echo(f"Review them in a browser: python -m device console --records {out_dir}/records")
    for path in s.exported:
        click.echo(f"Session export: {path}")
    if s.errors:
        click.echo(f"{len(s.errors)} problem(s) shown on screen: {s.errors[0]}")
        if len(s.errors) > 1 and s.errors[-1] != s.errors[0]:
            click.echo(f"the last one: {s.errors[-1]}")
    if s.stopped:
        click.echo(f"error: {s.stopped}", err=True)
        sys.exit(1)


@cli.command("console")
@click.option("--records", default=None, type=click.Path(file_okay=False),
              help="Records folder to serve; default: the config's [records] folder.")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False),
              help="Unit config (TOML) with the [console] section; default: the demo config.")
@click.option("--host", default=None, help="Address to listen on (default: the config's, 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(1024, 65535), help="TCP port (default: the config's, 8080).")
def console_cmd(records: str | None, config: str | None, host: str | None, port: int | None) -> None:
    """Serve the operator console (day list, patients, referral letters, exports, unit page) in a browser."""
    from device.console.server import serve, settings_for

    interactive = sys.stdin.isatty()
    serve(settings_for(config, records), host, port,
          prompt=(lambda text, hide: click.prompt(text, hide_input=hide, confirmation_prompt=hide))
          if interactive else None)


@cli.command("console-password")
@click.option("--records", default=None, type=click.Path(file_okay=False),
              help="Records folder the console serves; default: the config's [records] folder.")
@click.option("--config", "config", default=None, type=click.Path(dir_okay=False),
              help="Unit config (TOML); default: the demo config.")
@click.option("--user", default="clinic", show_default=True, help="User name (1-32 letters, digits, . _ -).")
@click.password_option("--password", prompt="PIN or password (6 characters or more)",
                       help="Read from the terminal when omitted (twice).")
def console_password_cmd(records: str | None, config: str | None, user: str, password: str) -> None:
    """Add a console user or change a PIN (kept as a salted Argon2id hash, file readable by this user only)."""
    from device.console.auth import Credentials
    from device.console.server import settings_for

    s = settings_for(config, records)
    creds = Credentials.for_records(s.records, s.unit.console.credentials)
    creds.set_password(user, password)
    click.echo(f"Console user '{user}' saved in {creds.path}.")


def _add_update_commands() -> None:
    from device.cli_updates import export_cmd, model_group

    cli.add_command(model_group)
    cli.add_command(export_cmd)


_add_update_commands()


def main() -> None:
    """Entry point: run the CLI, turning a ScreeningError into one line on stderr."""
    try:
        cli(standalone_mode=True)
    except ScreeningError as exc:  # pragma: no cover - click handles most exits
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
