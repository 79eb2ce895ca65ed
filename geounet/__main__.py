"""``python -m geounet`` runs the command line."""

from geounet.cli import entry

entry()
