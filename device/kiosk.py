"""The screening loop: wait for the trigger, capture, infer, gate, show, record, signal — for both eyes of each
patient, with retakes. The only stateful part of the unit.

It never shows a traceback: every problem becomes a screen with one sentence (camera unplugged, disk full, bad
photograph), the loop keeps going, and the camera is reopened on the next trigger. The microcontroller link may
vanish at any time; the loop then runs on the keyboard trigger and without LEDs.

Its state (patient, eye, attempt) only moves on once a screening is recorded, and whichever step fails (capture,
model, save, audit, display) leaves it consistent, so the next trigger works as soon as the fault is gone. With the
automatic trigger a lasting fault backs off (``retry_backoff_s``, doubled each time) and stops the loop after
``max_repeated_failures`` identical failures, with one message; a run of identical errors writes one audit entry.
Button presses are debounced on the host too (``button_debounce_ms``), at most one capture is taken per poll, and
presses that arrive while a capture is being processed are dropped, never replayed as captures.

    kiosk = Kiosk(cfg, camera, model, display, link, store)
    summary = kiosk.run()          # until cfg.kiosk.patients are done, 'q' is typed, or stop() is called
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from device.atomic import PRIVATE_DIR_MODE, make_dirs
from device.config import UnitConfig
from device.errors import ImageError, ModelError, ScreeningError
from device.keyboard import KeyboardTrigger
from device.model.bundle import ModelBundle
from device.model.watch import ActiveModelWatch, unsigned_notice
from device.pipeline import screen_frame
from device.quality import QualityGate
from device.records import RecordStore
from device.result import ScreeningResult, Verdict, patient_verdict
from device.screen_render import render_message, render_patient, render_result

log = logging.getLogger("device.kiosk")

STATUS = {Verdict.REFERABLE: "referable", Verdict.NON_REFERABLE: "non_referable", Verdict.UNGRADABLE: "ungradable"}
BEEP = {Verdict.REFERABLE: "attention", Verdict.NON_REFERABLE: "ok", Verdict.UNGRADABLE: "attention"}
MAX_BACKOFF_S = 60.0  # the longest pause between automatic retries of a failing capture


@dataclass
class KioskSummary:
    """What one run of the loop did."""

    screenings: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    patients: dict[str, str] = field(default_factory=dict)  # patient id -> referable / non_referable
    errors: list[str] = field(default_factory=list)
    session_id: str = ""
    exported: list[str] = field(default_factory=list)
    stopped: str = ""  # why the loop stopped on its own (a lasting fault), else empty


class Kiosk:
    """The unit's main loop over injected devices (real ones from the config, or fakes in tests)."""

    def __init__(self, cfg: UnitConfig, camera, model, display, link, store: RecordStore,
                 keyboard: KeyboardTrigger | None = None, model_watch: ActiveModelWatch | None = None) -> None:
        self.cfg, self.camera, self.model, self.display, self.link, self.store = (
            cfg, camera, model, display, link, store)
        self.model_watch = model_watch  # the store's ACTIVE pointer, checked before each new patient
        self.gate = QualityGate(cfg.quality)
        self.contract = model.contract
        self.keyboard = keyboard or KeyboardTrigger(None)
        self.summary = KioskSummary()
        self.patient_no = cfg.kiosk.first_patient
        self.eye_index = 0
        self.attempt = 1
        self.eyes: dict[str, ScreeningResult] = {}
        self._stop = False
        self._last_error: tuple[str, str] | None = None  # the last error shown, while it repeats
        self._repeats = 0  # how many times in a row it was shown
        self._last_press: float | None = None  # time of the last button press taken (or of the end of a capture)
        self.dropped_presses = 0  # presses ignored: bounces, double presses, presses during a capture
        card = model.card if isinstance(model, ModelBundle) else None  # a fake model has no weights
        about = {"sha256": card.sha256 if card else None,
                 "decision_threshold": self.contract.decision_threshold,
                 "region_threshold": self.contract.region_threshold}
        self.summary.session_id = store.start_session(cfg.kiosk.operator, self.contract.id, cfg.kiosk.unit_name,
                                                      about)
        self._audit_override()

    def _model_sha256(self) -> str | None:
        """sha256 of the model file now screening (checked against the card at load), None for a fake model."""
        return self.model.card.sha256 if isinstance(self.model, ModelBundle) else None

    def _audit_override(self) -> None:
        """The development override is written to the audit trail whenever an unsigned model is taken into use."""
        if unsigned_notice(self.model):
            self._audit("model_signature_override", self.model.signature.audit_detail(), who="unit")

    def _audit(self, action: str, detail: dict, who: str | None = None) -> bool:
        """Append an audit entry; a failure (full disk, locked database) is shown as a NOT SAVED screen.

        Returns:
            Whether it was written.
        """
        try:
            self.store.audit(who or self.cfg.kiosk.operator, action, detail, self.contract.id,
                             self.summary.session_id)
            return True
        except ScreeningError as exc:
            self._error("NOT SAVED", str(exc))
            return False

    def _check_model_update(self) -> bool:
        """Before a new patient: switch to the model the store now names as active, or say why not.

        Returns:
            False when a message was shown instead (the nurse reads it; the next trigger captures).
        """
        change = self.model_watch.poll() if self.model_watch is not None else None
        if change is None or change.model_id == self.contract.id:
            return True
        if change.model is None:
            action = "model_restart_needed" if self.model_watch.fixed else "model_switch_refused"
            self._audit(action, {"to": change.model_id, "problem": change.problem}, who="unit")
            self._show(render_message("MODEL NOT CHANGED", f"{change.problem} Press the button to go on with "
                                      f"{self.contract.id}.", "error", self.display.size, self.contract.id),
                       "model_update")
            return False
        old = self.contract.id
        self.model, self.contract = change.model, change.model.contract
        self._audit("model_switched", {"from": old, "to": self.contract.id,
                                       "signature": change.model.signature.audit_detail()}, who="unit")
        self._audit_override()
        log.info("model switched from %s to %s", old, self.contract.id)
        return True

    # -- signalling (never raises: the microcontroller may have vanished) ------------------------------------------
    def _signal(self, method: str, *args) -> None:
        try:
            getattr(self.link, method)(*args)
        except Exception as exc:  # noqa: BLE001 - a vanished link must not stop screening
            log.warning("microcontroller %s failed: %s", method, exc)

    def _show(self, image, label: str) -> None:
        try:
            self.display.show(image, label)
        except Exception as exc:  # noqa: BLE001 - a broken screen must not lose the record
            self.summary.errors.append(f"display: {exc}")
            log.error("display failed: %s", exc)

    def _error(self, headline: str, message: str) -> None:
        """Show one error screen and signal it; the first of a run of identical errors is audited."""
        self.summary.errors.append(message)
        key = (headline, message)
        if key == self._last_error:
            self._repeats += 1
        else:
            self._end_error_run()
            self._last_error, self._repeats = key, 1
        self._show(render_message(headline, message, "error", self.display.size, self.contract.id), "error")
        self._signal("show_status", "error")
        self._signal("beep", "error")
        if self._repeats == 1:
            self._audit_quietly("error", {"headline": headline, "message": message})

    def _audit_quietly(self, action: str, detail: dict) -> None:
        try:
            self.store.audit(self.cfg.kiosk.operator, action, detail, self.contract.id, self.summary.session_id)
        except Exception as exc:  # noqa: BLE001 - the error screen is already up; a failed audit must not hide it
            log.error("audit failed: %s", exc)

    def _end_error_run(self) -> None:
        """A run of identical errors ended (a success, another error, the end): audit how often it repeated."""
        if self._last_error is not None and self._repeats > 1:
            self._audit_quietly("error_repeated", {"headline": self._last_error[0], "message": self._last_error[1],
                                                   "times": self._repeats})
        self._last_error, self._repeats = None, 0

    @property
    def patient_id(self) -> str:
        return f"P{self.patient_no:04d}"

    @property
    def eye(self) -> str:
        return self.cfg.kiosk.eyes[self.eye_index]

    def ready_screen(self) -> None:
        """Show what the operator should do next and light the 'ready' LED."""
        msg = (f"Patient {self.patient_id}, {self.eye} eye, photo {self.attempt}: align the camera and press the "
               "button (or Enter).")
        if unsigned_notice(self.model):
            msg = f"{unsigned_notice(self.model)}: its signature was not verified. {msg}"
        self._show(render_message("READY", msg, "info", self.display.size, self.contract.id), "ready")
        self._signal("set_illumination", self.cfg.kiosk.illumination)
        self._signal("show_status", "ready")

    # -- triggers -------------------------------------------------------------------------------------------------
    def poll_triggers(self) -> list[str]:
        """Commands from the button and the keyboard since the last call ('capture', 'next', 'quit')."""
        mode = self.cfg.kiosk.trigger
        if mode == "auto":
            return ["capture"]
        out: list[str] = []
        try:
            events = self.link.poll_events()
        except Exception as exc:  # noqa: BLE001 - a vanished link must not stop the loop (keyboard still works)
            log.warning("microcontroller poll failed: %s", exc)
            events = []
        pressed = False
        for ev in events:
            if ev.kind == "button_pressed" and mode in ("button", "button_or_keyboard"):
                if not pressed and self._take_press(ev.time):
                    out.append("capture")
                    pressed = True  # one capture per poll: the rest of a flood is dropped
                else:
                    self.dropped_presses += 1
            elif ev.kind in ("disconnected", "error", "connected"):
                self._audit(f"link_{ev.kind}", {"detail": ev.detail}, who="unit")
        if mode in ("keyboard", "button_or_keyboard"):
            out.extend(self.keyboard.poll())
        return out

    def _take_press(self, at: float) -> bool:
        """Host-side debounce: a press within ``button_debounce_ms`` of the last one taken is a bounce."""
        if self._last_press is not None and at - self._last_press < self.cfg.kiosk.button_debounce_ms / 1000:
            return False
        self._last_press = at
        return True

    def _drop_queued_presses(self) -> None:
        """After a capture: presses that arrived while it was processed are dropped (other link events are kept),
        and the debounce starts again from now."""
        if self.cfg.kiosk.trigger not in ("button", "button_or_keyboard"):
            return
        try:
            events = self.link.poll_events()
        except Exception as exc:  # noqa: BLE001 - a vanished link must not stop the loop
            log.warning("microcontroller poll failed: %s", exc)
            events = []
        for ev in events:
            if ev.kind == "button_pressed":
                self.dropped_presses += 1
            elif ev.kind in ("disconnected", "error", "connected"):
                self._audit(f"link_{ev.kind}", {"detail": ev.detail}, who="unit")
        self._last_press = time.time()

    # -- one screening --------------------------------------------------------------------------------------------
    def screen_once(self) -> ScreeningResult | None:
        """Capture and screen one photograph of the current eye; show, record and signal the result.

        Returns:
            The result, or None when no photograph could be taken (the error screen is shown instead).

        Raises:
            ModelError: the model failed; the unit cannot screen any more.
        """
        if self.eye_index == 0 and self.attempt == 1 and not self._check_model_update():
            return None
        if self.store.free_mb() < self.cfg.records.min_free_mb:
            self._error("DISK FULL", "The records disk is almost full: export and remove old sessions before "
                                     "screening.")
            return None
        self._signal("show_status", "busy")
        self._signal("flash", self.cfg.kiosk.flash_ms)
        try:
            frame = self.camera.capture()
        except ScreeningError as exc:
            self._error("CAMERA PROBLEM", str(exc))
            return None
        pid, eye, attempt = self.patient_id, self.eye, self.attempt
        try:
            result = screen_frame(frame.rgb, self.model, self.gate, label="the photograph")
        except ModelError:
            raise
        except ImageError as exc:
            self._error("PHOTO UNUSABLE", str(exc))
            return None
        last_try = attempt > self.cfg.quality.max_retakes
        if result.verdict is Verdict.UNGRADABLE:
            result = result.with_final(last_try)
        title = f"Patient {pid} · {eye} eye" + (f" · photo {attempt}" if attempt > 1 else "")
        if unsigned_notice(self.model):
            title += f" · {unsigned_notice(self.model)}"
        screen = render_result(result, frame.rgb, self.display.size, title)
        self._show(screen, f"{pid}_{eye}_{attempt}")
        self._end_error_run()
        try:
            self.store.save(self.summary.session_id, pid, eye, attempt, result, frame.rgb, screen,
                            self.cfg.kiosk.operator, frame.source, model_sha256=self._model_sha256())
        except ScreeningError as exc:  # same patient, eye and attempt: the next trigger takes it again
            self._error("NOT SAVED", str(exc))
            return None
        self._signal("show_status", STATUS[result.verdict])
        self._signal("beep", BEEP[result.verdict])
        self.summary.screenings += 1
        key = result.verdict.value + ("_final" if result.final else "")
        self.summary.verdicts[key] = self.summary.verdicts.get(key, 0) + 1
        self._advance(result)
        return result

    def _advance(self, result: ScreeningResult) -> None:
        """Move on: retake the same eye, the next eye, or the next patient."""
        if result.verdict is Verdict.UNGRADABLE and not result.final:
            self.attempt += 1
            return
        self.eyes[self.eye] = result
        self.attempt = 1
        self.eye_index += 1
        if self.eye_index >= len(self.cfg.kiosk.eyes):
            self.finish_patient()

    def finish_patient(self) -> None:
        """Close the current patient (both eyes, or fewer after 'next'): record and show the patient verdict.

        The kiosk moves to the next patient first, so a failed audit write (shown as NOT SAVED, with the verdict:
        the eyes' records are already saved) cannot leave it pointing past the last eye.
        """
        pid, eyes = self.patient_id, self.eyes
        self.patient_no += 1
        self.eye_index, self.attempt, self.eyes = 0, 1, {}
        if not eyes:
            return
        verdict = patient_verdict(eyes).value
        self.summary.patients[pid] = verdict
        detail = {"patient_id": pid, "verdict": verdict,
                  "eyes": {e: r.verdict.value + ("_final" if r.final else "") for e, r in eyes.items()}}
        screen = render_patient(pid, Verdict(verdict), eyes, self.display.size, self.contract.id)
        self._show(screen, f"{pid}_summary")
        try:
            self.store.audit(self.cfg.kiosk.operator, "patient_done", detail, self.contract.id,
                             self.summary.session_id)
        except ScreeningError as exc:
            self._error("NOT SAVED", f"Patient {pid} is {verdict.replace('_', '-')} (each eye's record is saved), "
                        f"but the end of the visit was not: {exc}")

    # -- the loop -------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to end after the current step (signal handlers, tests)."""
        self._stop = True

    def _done(self, max_screenings: int | None) -> bool:
        k = self.cfg.kiosk
        if self._stop:
            return True
        if max_screenings is not None and self.summary.screenings >= max_screenings:
            return True
        return k.patients is not None and self.patient_no >= k.first_patient + k.patients

    def run(self, max_screenings: int | None = None) -> KioskSummary:
        """Run until the configured patients are done, 'q', :meth:`stop`, or ``max_screenings`` screenings.

        Returns:
            The summary (also written to the audit trail).

        Raises:
            ModelError: the model failed mid-session (the error screen is shown first).
        """
        self.ready_screen()
        while not self._done(max_screenings):
            commands = self.poll_triggers()
            if not commands:
                time.sleep(self.cfg.kiosk.poll_interval_s)
                continue
            for command in commands:
                if command == "quit":
                    self._stop = True
                    break
                if command == "next":
                    if self.eyes or self.attempt > 1:  # nothing to skip on a fresh patient: keep the id
                        self.finish_patient()
                elif command == "capture":
                    errors = len(self.summary.errors)
                    try:
                        self.screen_once()
                    except ModelError as exc:
                        self._error("MODEL PROBLEM", str(exc))
                        raise
                    except Exception as exc:  # never a traceback on the screen (logged with it below)
                        log.exception("unexpected error")
                        self._error("UNEXPECTED PROBLEM", f"Something went wrong ({type(exc).__name__}): the "
                                    "photograph was not screened; press the button to try again.")
                    self._drop_queued_presses()
                    if len(self.summary.errors) > errors and self.cfg.kiosk.trigger == "auto":
                        self._back_off()
                    if self._done(max_screenings):
                        break
                    # The result (or error) screen stays up until the next trigger: the nurse must read it.
                    self._signal("set_illumination", self.cfg.kiosk.illumination)
        self._finish()
        return self.summary

    def _back_off(self) -> None:
        """After a failed automatic capture: stop after too many identical failures, else wait (doubling)."""
        k = self.cfg.kiosk
        if self._repeats >= k.max_repeated_failures and self._last_error is not None:
            headline, message = self._last_error
            self.summary.stopped = (f"The unit stopped after {self._repeats} identical failures in a row "
                                    f"({headline}); fix the problem, then start it again: {message}")
            self._end_error_run()
            self._audit_quietly("stopped", {"reason": self.summary.stopped})
            self._show(render_message("STOPPED", self.summary.stopped, "error", self.display.size,
                                      self.contract.id), "stopped")
            log.error("%s", self.summary.stopped)
            self._stop = True
            return
        self._wait(min(k.retry_backoff_s * 2 ** (self._repeats - 1), MAX_BACKOFF_S))

    def _wait(self, seconds: float) -> None:
        """Sleep, waking early when :meth:`stop` is called."""
        end = time.monotonic() + seconds
        while not self._stop and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    def _finish(self) -> None:
        """End the session: close the patient, audit the summary, export; a write that fails is shown as NOT SAVED
        (never a traceback)."""
        if self.eyes:
            self.finish_patient()
        self._end_error_run()
        self._signal("set_illumination", 0)
        self._audit("session_ended", {"screenings": self.summary.screenings, "verdicts": self.summary.verdicts,
                                      "patients": self.summary.patients, "errors": len(self.summary.errors),
                                      "dropped_presses": self.dropped_presses,
                                      **({"stopped": self.summary.stopped} if self.summary.stopped else {})})
        folder = self.cfg.kiosk.export_folder
        if folder:
            try:
                make_dirs(folder, PRIVATE_DIR_MODE)
                for ext in ("csv", "json"):
                    path = os.path.join(folder, f"session_{self.summary.session_id}.{ext}")
                    self.summary.exported.append(str(self.store.export_session(self.summary.session_id, path)))
            except OSError as exc:
                self._error("NOT EXPORTED", f"The session could not be exported to {folder} ({exc.strerror}): its "
                            "records are kept on the unit; export it from the console or choose another folder.")
            except ScreeningError as exc:
                self._error("NOT EXPORTED", f"{exc} The records are kept on the unit; export them from the console.")
