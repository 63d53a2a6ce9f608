"""The pyserial driver against the emulated firmware on a real pty: handshake, commands, buttons, faults."""

from __future__ import annotations

import time

import pytest

from firmware_bridge import protocol as P
from firmware_bridge.commands import flash_message, status_message
from firmware_bridge.emulator import Emulator, ManualClock
from firmware_bridge.factory import open_link
from firmware_bridge.firmware.fw_core import DEBOUNCE_MS
from firmware_bridge.link import UnitLink
from firmware_bridge.serial_link import SerialLink

FAST = dict(retry_timeout_s=0.03, handshake_timeout_s=0.05, heartbeat_interval_s=0.05, silence_timeout_s=0.4,
            reconnect_interval_s=0.05)


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return False


@pytest.fixture
def emu():
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def link(emu):
    lk = SerialLink(emu.port, **FAST)
    assert wait_for(lambda: lk.connected), "no handshake with the emulator"
    yield lk
    lk.close()


def kinds(events):
    return [e.kind for e in events]


def test_handshake_reports_the_firmware(emu):
    lk = open_link({"type": "serial", "url": emu.port, "handshake_timeout_s": 0.05})
    try:
        assert isinstance(lk, UnitLink)
        assert wait_for(lambda: lk.connected)
        events = lk.poll_events()
        assert kinds(events) == ["connected"]
        assert events[0].detail == ("pico-dr-unit firmware 1.0.0, protocol 1, capabilities "
                                    "button,leds,buzzer,illumination,flash,fixation")
        assert emu.sessions == 1
    finally:
        lk.close()


def test_commands_drive_the_board_pins(emu, link):
    link.show_status("referable")
    link.set_illumination(40)
    link.set_fixation(3)
    link.flash(120)
    link.beep("attention")
    board = emu.board
    assert wait_for(lambda: board.flashes and board.state["fixation"] == 3 and
                    [v for k, v in board.history if k == "buzzer"] == [2700, 0, 2700, 0])  # two chirps
    assert board.state["leds"] == P.LED_RED and board.state["illumination"] == 40
    assert board.flashes == [(255, 120)]
    assert board.history.index(("fixation", 3)) < board.history.index(("flash", (255, 120)))  # kept in order


def test_button_presses_become_events_without_blocking(emu, link):
    link.poll_events()
    t0 = time.monotonic()
    assert link.poll_events() == [] and time.monotonic() - t0 < 0.01  # poll never waits
    emu.press()
    assert wait_for(lambda: emu.core.event_no >= 1)
    emu.release()
    events = []
    assert wait_for(lambda: events.extend(link.poll_events()) or len(events) >= 2)
    assert [(e.kind, e.detail, e.number) for e in events] == [("button_pressed", "capture", 1),
                                                               ("button_released", "capture", 2)]


def test_button_bounce_is_filtered():
    # Firmware time moves only with emu.advance(), so the bounce is exactly 2 ms per contact change against the
    # 20 ms debounce however loaded the machine is; the thread still carries the frames to the real driver.
    with Emulator(clock=ManualClock()) as emu:
        link = SerialLink(emu.port, **FAST)
        try:
            assert wait_for(lambda: link.connected), "no handshake with the emulator"
            link.poll_events()
            for _ in range(5):  # contact bounce: shorter than the debounce
                emu.press()
                emu.advance(2)
                emu.release()
                emu.advance(2)
            emu.advance(100)
            assert emu.core.event_no == 0
            emu.press()  # a real press: stable for longer than the debounce
            emu.advance(DEBOUNCE_MS + 5)
            assert emu.core.event_no == 1
            events = []
            assert wait_for(lambda: events.extend(link.poll_events()) or "button_pressed" in kinds(events))
            assert [e.kind for e in events if e.kind.startswith("button")] == ["button_pressed"]  # no bounce events
        finally:
            link.close()


def test_garbage_bytes_are_survived_and_reported(emu, link):
    link.poll_events()
    emu.inject(bytes(range(1, 200)) + b"\x00\x05\x01\x02\x00" + b"\xff" * 300 + b"\x00")
    link.flash(50)
    assert wait_for(lambda: emu.board.flashes == [(255, 50)])
    events = []
    assert wait_for(lambda: events.extend(link.poll_events()) or any(e.kind == "error" for e in events))
    assert any("corrupt frame(s) from the microcontroller were dropped" in e.detail for e in events)
    assert link.connected and link.stats()["bad_frames"] >= 2


def test_silent_microcontroller_is_reported_and_handshake_repeats(emu, link):
    link.poll_events()
    emu.hang()  # the port stays open but nothing answers
    events = []
    assert wait_for(lambda: events.extend(link.poll_events()) or "disconnected" in kinds(events))
    assert "has not answered for 0.4 s: check its cable and that the firmware is flashed." in events[0].detail
    assert not link.connected
    link.flash(10)  # no exception, no blocking: reported as not connected
    emu.resume()
    assert wait_for(lambda: link.connected)
    assert emu.sessions == 2


def test_board_restart_without_unplug_is_detected_by_nak(emu, link):
    link.poll_events()
    link.show_status("busy")
    assert wait_for(lambda: emu.core.channel._rx_seq == 1)  # delivered to the first boot
    emu.reboot()  # watchdog reset: same port, fresh firmware with no session; the next PING gets NAK_NO_SESSION
    assert wait_for(lambda: link.connections == 2)
    events = link.poll_events()
    assert kinds(events) == ["disconnected", "connected"], events
    # The LED status was restored on the new boot (blinking amber = busy, set as a new message).
    assert wait_for(lambda: ("leds", P.LED_AMBER) in emu.board.history and emu.core.channel._rx_seq == 1)


def test_missing_port_is_an_event_not_an_exception(tmp_path):
    lk = SerialLink(str(tmp_path / "ttyACM9"), **FAST)
    try:
        events = []
        assert wait_for(lambda: events.extend(lk.poll_events()) or events)
        assert events[0].kind == "error" and "Cannot open the microcontroller port" in events[0].detail
        ticket = lk.send_message(*flash_message(5))
        assert wait_for(lambda: lk.outcome(ticket) == "failed: not connected")
        assert not lk.connected
    finally:
        lk.close()


def test_loopback_url_is_recognised_as_not_a_microcontroller():
    lk = SerialLink("loop://", **FAST)
    try:
        events = []
        assert wait_for(lambda: events.extend(lk.poll_events()) or events)
        assert [(e.kind, e.detail) for e in events] == [
            ("error", "loop:// echoes our own messages (a loopback or a terminal in echo mode), so it is not the "
                      "microcontroller: check the link url.")]
        assert not lk.connected
    finally:
        lk.close()


def test_socket_url_works_like_a_serial_port():
    with Emulator(tcp=True) as emu:
        assert emu.port.startswith("socket://127.0.0.1:")
        lk = SerialLink(emu.port, **FAST, allow_network=True)  # the emulator's TCP mode: tests only
        try:
            assert wait_for(lambda: lk.connected)
            lk.flash(33)
            assert wait_for(lambda: emu.board.flashes == [(255, 33)])
            emu.unplug()
            assert wait_for(lambda: not lk.connected)
            emu.replug()
            assert wait_for(lambda: lk.connected) and lk.connections == 2
        finally:
            lk.close()


def test_state_commands_coalesce_while_one_shots_queue_in_order(emu, link):
    emu.hang()  # nothing is confirmed for a moment, so commands pile up
    tickets = [link.send_message(*status_message(s), state=True) for s in ("busy", "referable", "non_referable")]
    flashes = [link.send_message(*flash_message(d)) for d in (10, 20)]
    emu.resume()
    assert wait_for(lambda: all(link.outcome(t) != "pending" for t in tickets + flashes))
    outcomes = [link.outcome(t) for t in tickets]
    assert outcomes[0] in ("delivered", "superseded")  # it may have been in flight already
    assert outcomes[1] == "superseded" and outcomes[2] == "delivered"
    assert [link.outcome(t) for t in flashes] == ["delivered", "delivered"]
    assert wait_for(lambda: emu.board.state["leds"] == P.LED_GREEN)
    assert [d for _, d in emu.board.flashes] == [10, 20]


@pytest.mark.parametrize("url", ["socket://127.0.0.1:7000", "rfc2217://host:2217", "SOCKET://10.0.0.1:1",
                                 "spy://socket://host:1", "http://example.org/"])
def test_network_urls_are_refused(url):
    # issue 16 item 11: a socket:// link URL made the unit open a TCP connection, although no code path may
    from firmware_bridge.config import LinkConfigError as Refused
    from firmware_bridge.factory import parse_link_config

    with pytest.raises(Refused, match="is a network URL and the unit never opens network connections"):
        SerialLink(url)
    with pytest.raises(Exception, match="network URL"):
        parse_link_config({"type": "serial", "url": url})


@pytest.mark.parametrize("url", ["/dev/ttyACM0", "loop://", "spy:///dev/ttyUSB0?file=x.txt", "hwgrep://2341:8036",
                                 "COM3"])
def test_local_ports_are_accepted(url):
    from firmware_bridge.factory import parse_link_config

    assert parse_link_config({"type": "serial", "url": url}).url == url
