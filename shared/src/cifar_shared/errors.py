"""One exception type for the user's mistakes.

Raised where the mistake is found, with a message that names the thing and the fix; the CLI
boundary turns it into one line on stderr and exit code 2. Anything else is a bug.
"""


class UserError(Exception):
    """A problem the user can fix (bad path, corrupt file, wrong config value)."""
