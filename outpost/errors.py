class OutpostError(Exception):
    """An error the user can fix. Its message names the file, key or host at fault,
    and is shown alone, without a traceback."""
