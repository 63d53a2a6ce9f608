"""The operator console: a local web page for the clinic (day list, patients, referral letters, exports, unit).

Importing this package costs nothing: the web stack (Flask, waitress, argon2-cffi, fpdf2) is imported only by
:mod:`device.console.app` and :mod:`device.console.server`, so the unit's config can name a console section on a
unit without it. Start it with ``python -m device console --records PATH`` (docs/console.md).
"""
