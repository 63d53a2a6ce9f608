"""What the unit page shows: the model card, the last self-test, free disk, camera and link state, errors.

The console never opens the camera, the microcontroller or the model (the kiosk owns them): their state is what
the kiosk and ``python -m device selftest`` last wrote to the audit trail, with the time it was seen.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from device.atomic import sha256_file
from device.config import model_config_for
from device.errors import ScreeningError
from device.model import BundleModelConfig
from device.model.bundle import MODELS_ROOT, bundle_folder, read_card
from device.model.card import ModelCard

CARD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")  # device.model.card.ModelCard.id
RECENT_ERRORS = 20
RECENT_AUDIT = 30


@dataclass(frozen=True)
class PartState:
    """A part's last known state: ok / fault / unknown, what was seen, and when (audit time)."""

    state: str
    message: str
    at: str | None = None


def model_for(model_id: str, recorded: dict) -> dict:
    """The model facts of a screening: what its session recorded (sha256, cut-off), else the card on this unit.

    Returns:
        ``{"id", "sha256", "decision_threshold", "region_threshold", "source"}`` (None where unknown).
    """
    if recorded.get("decision_threshold") is not None:
        return {"id": model_id, "sha256": recorded.get("sha256"), "source": "recorded at the session's start",
                "decision_threshold": recorded["decision_threshold"],
                "region_threshold": recorded.get("region_threshold")}
    if CARD_ID.match(model_id) and (MODELS_ROOT / model_id).is_dir():
        try:
            card = read_card(MODELS_ROOT / model_id)
            return {"id": model_id, "sha256": card.sha256, "decision_threshold": card.decision_threshold,
                    "region_threshold": card.region_threshold, "source": "the card of that id on this unit"}
        except ScreeningError:
            pass
    return {"id": model_id, "sha256": None, "decision_threshold": None, "region_threshold": None,
            "source": "not recorded, and no card of that id on this unit"}


def configured_model(unit) -> tuple[ModelCard | None, str, bool | None]:
    """The model the unit's config names: (card, where / problem, weights match the card's sha256)."""
    mcfg = model_config_for(unit)
    if not isinstance(mcfg, BundleModelConfig):
        return None, "the config names the fake model: not for screening", None
    try:
        folder = bundle_folder(mcfg)  # its path, the store's active model, or the bundled default
        card = read_card(folder)
    except ScreeningError as exc:
        return None, str(exc), None
    weights = folder / card.file
    return card, str(folder), weights.is_file() and sha256_file(weights) == card.sha256


def _newest(*states: PartState) -> PartState:
    seen = [s for s in states if s.at]
    return max(seen, key=lambda s: s.at) if seen else PartState("unknown", "not seen in the audit trail yet")


def _selftest_part(selftest: dict | None, name: str) -> PartState:
    for check in (selftest or {}).get("detail", {}).get("checks", []):
        if check.get("name") == name:
            return PartState("ok" if check.get("ok") else "fault", f"self-test: {check.get('message')}",
                             selftest["at"])
    return PartState("unknown", "")


def camera_state(reader, selftest: dict | None) -> PartState:
    """The camera: the newest of its last capture, its last 'CAMERA PROBLEM' and the self-test's camera check."""
    shot = reader.last_event("screened")
    problem = reader.last_event("error", "CAMERA PROBLEM")
    return _newest(PartState("ok", "photograph captured and screened", shot["at"]) if shot else PartState("", ""),
                   PartState("fault", problem["detail"].get("message", ""), problem["at"]) if problem
                   else PartState("", ""), _selftest_part(selftest, "camera"))


def link_state(reader, unit, selftest: dict | None) -> PartState:
    """The microcontroller link: the newest of its connect / disconnect / error events and the self-test."""
    if unit.link.type == "none":
        return PartState("unknown", "no microcontroller configured (keyboard trigger, no LEDs)")
    events = [reader.last_event(a) for a in ("link_connected", "link_disconnected", "link_error")]
    states = [PartState("ok" if e["action"] == "link_connected" else "fault",
                        f"{e['action'].removeprefix('link_')}: {e['detail'].get('detail') or ''}".rstrip(": "),
                        e["at"]) for e in events if e]
    return _newest(*states, _selftest_part(selftest, "link"))


def unit_status(reader, settings) -> dict:
    """Everything the unit page shows (plain values for the template)."""
    unit = settings.unit
    st = os.statvfs(settings.records)
    free_mb = st.f_bavail * st.f_frsize / 2 ** 20
    card, where, weights_ok = configured_model(unit)
    selftest = reader.last_event("selftest")
    return {
        "records": str(settings.records), "config": settings.config_path or "the demo config",
        "free_mb": free_mb, "min_free_mb": unit.records.min_free_mb, "disk_low": free_mb < unit.records.min_free_mb,
        "screenings": reader.count(), "audit_events": reader.audit_count(),
        "card": card, "model_where": where, "weights_ok": weights_ok,
        "session": reader.last_event("session_started"), "selftest": selftest,
        "camera": camera_state(reader, selftest), "link": link_state(reader, unit, selftest),
        "errors": reader.audit(RECENT_ERRORS, actions=("error",)), "audit": reader.audit(RECENT_AUDIT),
    }
