"""``python -m device model ...`` and ``python -m device export``: the unit's half of the model-refresh loop
(docs/model_updates.md). Each command calls one public function; errors are one sentence (``error: ...``)."""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from device.config import UnitConfig, load_config

CONFIG_OPTION = click.option("--config", "config", default=None, type=click.Path(dir_okay=False),
                             help="Unit config (TOML); default: the demo config.")


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "admin"


def open_model_store(cfg: UnitConfig, who: str | None = None):
    """The unit's :class:`~device.model.store.ModelStore`, auditing into its records.

    Returns:
        ``(store, records)``; close ``records`` when done.

    Raises:
        ModelError: the config's model is not a bundle with a ``store``.
    """
    from device.errors import ModelError
    from device.model import BundleModelConfig
    from device.model.store import ModelStore
    from device.records import RecordStore

    if not isinstance(cfg.model, BundleModelConfig):
        raise ModelError("This unit's config runs the fake model; models are installed only on units whose [model] "
                         "type is \"bundle\" with a store.")
    ModelStore(cfg.model)  # refuses a config without a store before the records are opened
    records = RecordStore.from_config(cfg.records, recover=False)  # beside a running kiosk: never its recovery
    who = who or _who()
    return ModelStore(cfg.model, lambda action, detail, mid: records.audit(who, action, detail, mid)), records


@click.group("model")
def model_group() -> None:
    """Install, activate, roll back and remove model bundles on this unit (signed bundles only)."""


def _run(config: str | None, action):
    store, records = open_model_store(load_config(config))
    try:
        return action(store)
    finally:
        records.close()


@model_group.command("list")
@CONFIG_OPTION
def list_cmd(config: str | None) -> None:
    """The installed models: which is active, which is the rollback target, their signatures."""
    from device.model.bundle import default_model_dir

    def show(store):
        pointer = store.pointer()
        models = sorted(store.list(), key=lambda m: (not m.active, not m.previous, m.id))
        for m in models:
            role = "ACTIVE" if m.active else ("previous" if m.previous else "")
            card = f"{m.card.format} {m.card.input.size}px" if m.card else "card unreadable"
            state = m.signature.describe() if m.signature and m.signature.trusted else f"NOT USABLE: {m.problem}"
            click.echo(f"{role:8s} {m.id}  {card}  {m.size / 2 ** 20:.1f} MiB  {state}")
        if pointer is None:
            click.echo(f"(nothing activated in {store.folder}: the unit runs the bundled default "
                       f"{default_model_dir().name})")
        elif not models:
            click.echo(f"(no models installed in {store.folder})")

    _run(config, show)


@model_group.command("install")
@click.argument("path", type=click.Path(exists=True))
@CONFIG_OPTION
def install_cmd(path: str, config: str | None) -> None:
    """Install PATH (a bundle folder, a .tar, or a USB stick holding one) and make it the active model."""
    r = _run(config, lambda store: store.install(Path(path)))
    if r.seeded_default:
        click.echo(f"kept the bundled default {r.seeded_default} in the store, for rollback")
    click.echo(f"{r.model_id}: {'already installed; ' if r.already_installed else 'installed, '}active now"
               f"{f' (rollback returns to {r.previous})' if r.previous else ''}. A running kiosk switches to it "
               "before its next patient.")


@model_group.command("activate")
@click.argument("model_id")
@CONFIG_OPTION
def activate_cmd(model_id: str, config: str | None) -> None:
    """Make the installed model MODEL_ID active (after checking its signature and self-test)."""
    p = _run(config, lambda store: store.activate(model_id))
    click.echo(f"{p.active}: active now{f' (rollback returns to {p.previous})' if p.previous else ''}.")


@model_group.command("rollback")
@CONFIG_OPTION
def rollback_cmd(config: str | None) -> None:
    """Make the previous model active again."""
    p = _run(config, lambda store: store.rollback())
    click.echo(f"rolled back: {p.active} is active again ({p.previous} stays installed).")


@model_group.command("remove")
@click.argument("model_id")
@CONFIG_OPTION
def remove_cmd(model_id: str, config: str | None) -> None:
    """Delete the installed model MODEL_ID (not the active one)."""
    _run(config, lambda store: store.remove(model_id))
    click.echo(f"{model_id}: removed.")


@model_group.command("keys")
@CONFIG_OPTION
def keys_cmd(config: str | None) -> None:
    """Print the public keys this unit trusts, as config lines."""
    from device.model import BundleModelConfig

    cfg = load_config(config)
    keys = cfg.model.trusted_keys if isinstance(cfg.model, BundleModelConfig) else ()
    click.echo("trusted_keys = [")
    for k in keys:
        click.echo(f'  {{ name = "{k.name}", public_key = "{k.public_key}" }},   # key id {k.key_id}')
    click.echo("]")


@click.command("export")
@click.option("--since", required=True, help="First capture date, YYYY-MM-DD (UTC) or an ISO date-time.")
@click.option("--until", default=None, help="Capture date to stop before (default: now).")
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="New folder for the package.")
@CONFIG_OPTION
def export_cmd(since: str, until: str | None, to: str, config: str | None) -> None:
    """Package the photographs screened since a date for a specialist to grade (docs/model_updates.md)."""
    from device.grading_export import export_for_grading, parse_when

    result = export_for_grading(load_config(config), parse_when(since), to, parse_when(until) if until else None,
                                who=_who())
    click.echo(f"{result.images} photographs written to {result.folder} (patient data: keep it private).")
    for record_id, why in result.left_out.items():
        click.echo(f"left out record {record_id}: {why}", err=True)
    if not result.permissions_kept:
        click.echo(f"warning: the file system of {result.folder} does not keep permissions (a FAT stick?): anyone "
                   "with the stick can read the photographs; move them to encrypted storage.", err=True)
