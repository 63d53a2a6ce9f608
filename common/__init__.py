"""What every part of the project shares and none of them owns: config helpers (one validation-error sentence, one
``--set KEY=VALUE`` parser).

It imports nothing of ``device``, ``trainer`` or ``firmware_bridge``, so all three may import it (ARCHITECTURE.md).
"""
