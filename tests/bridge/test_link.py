"""The kiosk-facing interface: NullLink, FakeLink, config validation and open_link."""

from __future__ import annotations

import threading

import pytest

from firmware_bridge.config import LinkConfigError, SerialLinkConfig
from firmware_bridge.factory import open_link, parse_link_config
from firmware_bridge.fake import FakeLink, NullLink
from firmware_bridge.link import UnitLink


def test_null_link_does_nothing_and_is_never_connected():
    link = open_link(None)
    assert isinstance(link, NullLink) and isinstance(link, UnitLink)
    link.show_status("ready")
    link.beep("ok")
    link.set_illumination(10)
    link.flash(100)
    link.set_fixation(1)
    link.close()
    assert link.connected is False
    assert link.poll_events() == []


def test_fake_link_records_every_call_in_order():
    link = open_link({"type": "fake"})
    assert isinstance(link, FakeLink) and isinstance(link, UnitLink)
    assert [e.kind for e in link.poll_events()] == ["connected"]
    link.show_status("busy")
    link.set_illumination(40)
    link.flash(120)
    link.show_status("referable")
    link.beep("attention")
    link.set_fixation(3)
    assert link.calls == [("show_status", "busy"), ("set_illumination", 40), ("flash", 120),
                          ("show_status", "referable"), ("beep", "attention"), ("set_fixation", 3)]
    assert link.statuses == ["busy", "referable"]
    assert link.flashes == [120] and link.beeps == ["attention"] and link.fixations == [3]
    link.close()
    link.show_status("ready")  # ignored after close
    assert link.calls[-1] == ("close", None) and link.connected is False


def test_fake_link_button_events_are_delivered_once_and_never_block():
    link = FakeLink(connected=False)
    assert link.poll_events() == []
    threads = [threading.Thread(target=link.click) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kinds = [e.kind for e in link.poll_events()]
    assert kinds.count("button_pressed") == 10 and kinds.count("button_released") == 10
    assert link.poll_events() == []
    link.unplug()
    link.plug()
    assert [e.kind for e in link.poll_events()] == ["disconnected", "connected"]


@pytest.mark.parametrize("call, message", [
    (lambda lk: lk.show_status("green"), "Unknown unit status 'green': use one of ready, busy"),
    (lambda lk: lk.beep("siren"), "Unknown beep pattern 'siren': use one of ok, attention, error."),
    (lambda lk: lk.set_illumination(256), "Illumination level 256 is out of range: use an integer from 0 to 255."),
    (lambda lk: lk.flash(0), "Flash duration 0 ms is out of range: use an integer from 1 to 2000."),
    (lambda lk: lk.set_fixation(9), "Fixation target 9 does not exist: use 0 (off) or 1 to 5."),
])
@pytest.mark.parametrize("factory", [NullLink, FakeLink])
def test_bad_arguments_are_caller_bugs_with_one_sentence(factory, call, message):
    with pytest.raises(ValueError) as info:
        call(factory())
    assert str(info.value).startswith(message)


def test_config_defaults_and_errors_name_the_field():
    cfg = parse_link_config({"type": "serial", "url": "/dev/ttyACM0"})
    assert isinstance(cfg, SerialLinkConfig) and cfg.retry_timeout_s == 0.2 and cfg.max_retries == 4
    with pytest.raises(LinkConfigError,
                       match=r"^Microcontroller link config: field 'url' is missing; fix it in the unit config"):
        parse_link_config({"type": "serial"})
    with pytest.raises(LinkConfigError, match=r"field 'baud' is invalid .*Extra inputs are not permitted"):
        parse_link_config({"type": "serial", "url": "loop://", "baud": 9600})
    with pytest.raises(LinkConfigError, match=r"field 'retry_timeout_s' is invalid"):
        parse_link_config({"type": "serial", "url": "loop://", "retry_timeout_s": 0})
    with pytest.raises(LinkConfigError, match=r"field 'type' is invalid"):
        parse_link_config({"type": "usb"})


def test_bridge_imports_neither_device_trainer_nor_pyserial_until_a_serial_link_opens():
    import subprocess
    import sys

    code = ("import sys, firmware_bridge.link, firmware_bridge.config, firmware_bridge.factory, firmware_bridge.fake, "
            "firmware_bridge.vocabulary, firmware_bridge.protocol, "
            "firmware_bridge.transport, firmware_bridge.session, firmware_bridge.commands, firmware_bridge.emulator, "
            "firmware_bridge.serial_link\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'device', 'trainer', 'serial', 'tensorflow', "
            "'keras'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
