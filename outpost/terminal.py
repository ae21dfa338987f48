"""What reaches the operator's terminal from a host is shown, never obeyed: `visible(text)`.

A host's output (a step's report, the stderr tail of a failure, a version its app reports)
is the host's to write, and a terminal acts on what it is sent: ESC sequences retitle it, move
the cursor, erase lines or rewrite what was shown, and bidirectional overrides reorder a
line. Every such character but newline and tab is written as an escape instead: `\\x1b`,
`\\r`, `\\u202e`. steps.common.say, taskutil.action (error messages) and the reporter's
tables pass everything through it.
"""
from __future__ import annotations

# C0 controls but tab and newline, DEL, the C1 controls (U+0080-U+009F: some terminals take
# U+009B as ESC [), and the Unicode bidirectional controls ("Trojan Source").
_HIDDEN = ([c for c in range(0x20) if c not in (0x09, 0x0A)] + [0x7F] + list(range(0x80, 0xA0))
           + [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
_NAMED = {0x0D: "\\r", 0x1B: "\\x1b"}
_ESCAPES = {c: _NAMED.get(c, f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _HIDDEN}


def visible(text: str) -> str:
    """text with every control character but newline and tab shown as an escape."""
    return text.translate(_ESCAPES)
