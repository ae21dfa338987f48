"""doit task definitions, one module per concern (docs/DESIGN.md, "The map")."""
