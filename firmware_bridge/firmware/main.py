"""Reference firmware for a Raspberry Pi Pico (RP2040) running MicroPython >= 1.20.

Copy to the board with the three shared modules (docs/firmware_bridge.md):

    mpremote cp firmware_bridge/protocol.py firmware_bridge/transport.py \
        firmware_bridge/firmware/fw_core.py firmware_bridge/firmware/main.py :

The protocol, the resend logic and the behaviour are the host's own modules (``FirmwareCore``); this file only
binds them to the pins and to the USB CDC serial port, and runs the main loop under a hardware watchdog.
"""

import select
import sys
import time

import fw_core
import machine
import micropython

# Pin map (GPIO numbers; docs/firmware_bridge.md has the wiring table).
PIN_BUTTON = 12  # capture button to GND, internal pull-up: pressed reads 0
PIN_LED_GREEN = 13
PIN_LED_AMBER = 14
PIN_LED_RED = 15
PIN_BUZZER = 11  # passive piezo via an NPN transistor, PWM tone
PIN_ILLUMINATION = 17  # focusing (dim / IR) LED driver, PWM
PIN_FLASH = 16  # white flash LED driver enable (logic-level MOSFET gate)
PIN_FIXATION = (18, 19, 20, 21, 22)  # centre, up, down, left, right fixation LEDs
PIN_ONBOARD_LED = 25  # heartbeat blink (Pico; the Pico W's LED is "LED")
PWM_FREQ_ILLUMINATION = 20000  # Hz: above hearing and without visible flicker
WATCHDOG_MS = 2000  # reset if the loop stalls (max on RP2040 is 8388 ms)
LOOP_SLEEP_MS = 1
READ_CHUNK = 64


class PicoBoard:
    """The pins behind the ``board`` interface of ``FirmwareCore``."""

    def __init__(self):
        self.button = machine.Pin(PIN_BUTTON, machine.Pin.IN, machine.Pin.PULL_UP)
        self.led_pins = (machine.Pin(PIN_LED_GREEN, machine.Pin.OUT), machine.Pin(PIN_LED_AMBER, machine.Pin.OUT),
                         machine.Pin(PIN_LED_RED, machine.Pin.OUT))
        self.buzzer_pwm = machine.PWM(machine.Pin(PIN_BUZZER))
        self.buzzer_pwm.duty_u16(0)
        self.illum_pwm = machine.PWM(machine.Pin(PIN_ILLUMINATION))
        self.illum_pwm.freq(PWM_FREQ_ILLUMINATION)
        self.illum_pwm.duty_u16(0)
        self.flash_pin = machine.Pin(PIN_FLASH, machine.Pin.OUT, value=0)
        self.flash_timer = machine.Timer()
        self.fixation_pins = [machine.Pin(n, machine.Pin.OUT, value=0) for n in PIN_FIXATION]
        self.onboard = machine.Pin(PIN_ONBOARD_LED, machine.Pin.OUT)

    def ticks_ms(self):
        return time.ticks_ms()

    def buttons(self):
        return 0 if self.button.value() else 1

    def leds(self, mask):
        for i, pin in enumerate(self.led_pins):
            pin.value(1 if mask & (1 << i) else 0)

    def buzzer(self, freq_hz):
        if freq_hz:
            self.buzzer_pwm.freq(freq_hz)
            self.buzzer_pwm.duty_u16(32768)  # 50 % duty: loudest square wave
        else:
            self.buzzer_pwm.duty_u16(0)

    def illumination(self, level):
        self.illum_pwm.duty_u16(level * 257)  # 0..255 -> 0..65535

    def flash(self, level, duration_ms):
        # The pulse is ended by a hardware timer, so its length does not depend on the main loop.
        self.flash_pin.value(1 if level else 0)
        self.flash_timer.init(mode=machine.Timer.ONE_SHOT, period=duration_ms, callback=self._flash_off)

    def _flash_off(self, _timer):
        self.flash_pin.value(0)

    def fixation(self, target):
        for i, pin in enumerate(self.fixation_pins):
            pin.value(1 if target == i + 1 else 0)


def main():
    micropython.kbd_intr(-1)  # 0x03 is ordinary data on our binary line, not Ctrl-C
    board = PicoBoard()
    core = fw_core.FirmwareCore(board)
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    wdt = machine.WDT(timeout=WATCHDOG_MS)
    beat = time.ticks_ms()
    while True:
        data = bytearray()
        while len(data) < READ_CHUNK and poller.poll(0):
            chunk = stdin.read(1)
            if not chunk:
                break
            data.extend(chunk)
        if data:
            core.feed(bytes(data))
        core.tick()
        out = core.take_output()
        if out:
            stdout.write(out)
        if time.ticks_diff(time.ticks_ms(), beat) >= 500:
            beat = time.ticks_ms()
            board.onboard.toggle()
        wdt.feed()
        time.sleep_ms(LOOP_SLEEP_MS)


main()
