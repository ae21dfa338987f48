"""The builders: pure functions that make command lines, scripts, file contents and bundles, one
module per concern (commands/X.py for tasks/X.py and steps/X.py), and base.py and bundle.py for
what they share. Nothing here runs anything or asks a host anything."""
