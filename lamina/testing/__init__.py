"""``lm.testing``: conformance checks for lamina modules, yours included (see ``lamina/testing/conformance.py``)."""

from lamina.testing.conformance import *  # noqa: F401,F403
