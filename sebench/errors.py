"""The one exception type for mistakes a user can make.

The CLI prints a UserError as a single message and exits 2 (no traceback). Library code raises it for
bad names, bad specs, missing or corrupt data; programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: names what was wrong, where, and what is allowed.

    `where` is a file (or the CLI option), `field` the offending key, `fix` what to do instead.
    """

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None,
                 fix: str | None = None):
        self.message = message
        self.where = where
        self.field = field
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        parts = []
        if self.where:
            parts.append(str(self.where))
        if self.field:
            parts.append(f"field '{self.field}'")
        head = ": ".join(parts)
        text = f"{head}: {self.message}" if head else self.message
        if self.fix:
            text += f" ({self.fix})"
        return text


def choice_error(kind: str, value: object, allowed, *, where: str | None = None,
                 field: str | None = None) -> UserError:
    """Unknown-name error that lists the allowed values."""
    allowed_s = ", ".join(repr(a) for a in allowed)
    return UserError(f"unknown {kind} {value!r}", where=where, field=field,
                     fix=f"allowed: {allowed_s}")
