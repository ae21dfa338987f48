"""The Jinja2 engine: one template of templates/ rendered with a context, strictly.

    render(template_name, context)  one template's text

Rendering is strict: an undefined variable, a None value or a syntax error raises a
RenderError naming the template file, the line and the variable, e.g.

    templates/nginx/site.conf.j2:31: undefined variable 'site.nmae'

What each host's files are, and the values they get, are their step's builders'
(outpost.commands.config for the web host, .dns, .acme, .bootstrap).
"""
from __future__ import annotations

import functools
import re
import shlex
import traceback
from pathlib import Path

from outpost.errors import OutpostError

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


class RenderError(OutpostError):
    """A template can't be rendered: syntax error, undefined variable, missing template."""


class _Namespace(dict):
    """A context dict that knows its own name ("site", "packages.linkedlist"), so an undefined
    attribute is reported as 'site.nmae' rather than "'dict object' has no attribute"."""

    def __init__(self, name: str, items):
        super().__init__(items)
        self.outpost_name = name


# jinja2 is imported by the functions that render, not at the top: the task definitions
# import this module, and a no-op deploy renders nothing.

@functools.cache  # one class, made on the first render
def _undefined_type() -> type:
    import jinja2

    class Undefined(jinja2.StrictUndefined):
        """StrictUndefined whose message is the full name of the missing variable."""

        @property
        def _undefined_message(self) -> str:
            if self._undefined_hint is not None:
                return super()._undefined_message
            owner = getattr(self._undefined_obj, "outpost_name", None)
            name = self._undefined_name
            if owner is not None:
                name = f"{owner}.{name}" if isinstance(name, str) else f"{owner}[{name!r}]"
            elif self._undefined_obj is not jinja2.utils.missing:
                return super()._undefined_message  # e.g. an attribute of a string
            return f"undefined variable {name!r}"

    return Undefined


def _named(value, name: str):
    """The context with every dict a _Namespace, and every None an error when used: jinja2
    would print None as "None", a value nobody meant."""
    if value is None:
        return _undefined_type()(hint=f"variable {name!r} is not set (None) for this host")
    if isinstance(value, dict):
        return _Namespace(name, {k: _named(v, f"{name}.{k}") for k, v in value.items()})
    if isinstance(value, list):
        return [_named(item, f"{name}[{i}]") for i, item in enumerate(value)]
    return value


def nginx_quote(value) -> str:
    """A string as one nginx token: double-quoted, with " and \\ escaped."""
    text = str(value)
    if "$" in text or any(ord(c) < 32 for c in text):
        # nginx expands $name inside strings and has no escape for it.
        raise RenderError(f"{text!r} can't be an nginx string ($ and control characters)")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def doas_word(value) -> str:
    """A word of a doas.conf rule, quoted when it holds anything but plain characters."""
    word = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./:+=@-]+", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.cache  # one per process: it caches the parsed templates
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=_undefined_type(),
        keep_trailing_newline=True,  # doas refuses a last line without its newline
        # A {% tag %} or {# comment #} on a line of its own leaves no blank line behind.
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # config files, not HTML
    )
    env.filters["nginx_quote"] = nginx_quote
    env.filters["doas_word"] = doas_word
    env.filters["sh_quote"] = shlex.quote
    return env


def _template_line(error: BaseException, filename: str) -> int | None:
    """The template line that was running: jinja2 rewrites tracebacks so that template code
    appears as frames of the template file."""
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if frame.filename == filename]
    return lines[-1] if lines else None


def render(template_name: str, context: dict) -> str:
    """The text of templates/<template_name> rendered with context."""
    import jinja2

    shown = f"{TEMPLATES.name}/{template_name}"
    try:
        template = _environment().get_template(template_name)
    except jinja2.TemplateNotFound:
        raise RenderError(f"{shown}: no such template in {TEMPLATES}") from None
    except jinja2.TemplateSyntaxError as error:
        raise RenderError(f"{shown}:{error.lineno}: template syntax error: {error.message}") \
            from None
    named = {key: _named(value, key) for key, value in context.items()}
    try:
        return template.render(named)
    except (jinja2.UndefinedError, RenderError) as error:
        line = _template_line(error, template.filename)
        where = f"{shown}:{line}" if line else shown
        message = error.message if isinstance(error, jinja2.UndefinedError) else str(error)
        raise RenderError(f"{where}: {message}") from None
