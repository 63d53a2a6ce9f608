"""The keyboard trigger of the kiosk: Enter captures, 'n' moves to the next patient, 'q' quits.

The kiosk polls it once per loop iteration beside the microcontroller's button; it never blocks.

    keyboard = KeyboardTrigger(sys.stdin)
    keyboard.poll()        # ['capture'] after the operator pressed Enter
"""

from __future__ import annotations

import os
import select
from typing import IO, ClassVar


class KeyboardTrigger:
    """Non-blocking keyboard commands from a stream (stdin): Enter = capture, 'n' = next patient, 'q' = quit.

    Reads the file descriptor directly (not the buffered text layer), so lines typed or pasted together are all
    seen, one command each.
    """

    COMMANDS: ClassVar[dict[str, str]] = {"": "capture", "c": "capture", "n": "next", "q": "quit"}

    def __init__(self, stream: IO | None) -> None:
        self.stream = stream
        self._pending = ""

    def poll(self) -> list[str]:
        """Return the commands typed since the last call: 'capture', 'next', 'quit' (unknown words are ignored)."""
        if self.stream is None:
            return []
        try:
            fd = self.stream.fileno()
            ready, _, _ = select.select([fd], [], [], 0)
            data = os.read(fd, 4096) if ready else None
        except (OSError, ValueError):
            self.stream = None
            return []
        if data == b"":  # end of input (stdin is /dev/null under systemd): the button stays the trigger
            self.stream = None
            self._pending += "\n" if self._pending else ""
        elif data:
            self._pending += data.decode("utf-8", errors="ignore")
        *lines, self._pending = self._pending.split("\n")
        return [self.COMMANDS[w] for w in (line.strip().lower() for line in lines) if w in self.COMMANDS]
