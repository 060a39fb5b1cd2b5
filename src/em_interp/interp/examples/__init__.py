"""Runnable examples of the interp API (``python -m em_interp.interp.examples.<name>``)."""
