"""doit task definitions, one module per pipeline stage. dodo.py passes each the inventory."""
