"""The worker side: the Celery app, one thin task per stage, and the CLI that composes both sides.

Importing this package loads no torch; the stages import imggen when they first run.
"""
