"""The dispatcher's errors: one root, so a caller can catch everything the dispatcher raises.

::

    DispatcherError
    ├── ConfigError          a tenants file that cannot be used (every problem listed)
    ├── BuildError           a tenant whose app could not be built: it answers 503
    │   └── IsolationError   an app the dispatcher refuses to serve (it could reach another tenant)
    ├── CopyError            copy-db could not finish or verify; the source is untouched
    └── BackupError          a backup, restore, archive or clone could not be done; no change
"""

from __future__ import annotations


class DispatcherError(Exception):
    """Anything the dispatcher itself reports (as opposed to a tenant app's own errors)."""


class BuildError(DispatcherError):
    """A tenant whose app could not be built; it answers 503 and the reason is logged."""


class IsolationError(BuildError):
    """A tenant app that cannot be isolated from the others: refused (503), reason logged."""


class CopyError(DispatcherError):
    """The copy cannot be done or did not verify; the source is untouched."""


class BackupError(DispatcherError):
    """A backup, restore, archive or clone that cannot be done or did not verify.

    Raised before anything is changed, or after what was changed has been put back; the
    message says what is wrong and what to do.
    """
