"""What each step does: one module per concern (tasks/X.py calls outpost/steps/X.py), each
composing its builders (outpost.commands.X: what to run) with the runners (outpost.remote over
SSH, outpost.probe for read-only questions). See docs/DESIGN.md for the map."""
