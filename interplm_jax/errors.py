"""Exception types. Every message names the file, line, protein or key at fault."""


class InterPLMError(Exception):
    """Base class of the errors this project raises on purpose."""


class InputError(InterPLMError, ValueError):
    """Bad user input: a malformed file, an invalid option, an unknown key (CLI exit status 2)."""


class StoreError(InputError):
    """An activation store that is missing, incomplete, of another format or inconsistent."""


class LockedError(InputError):
    """Another process is writing the same output (a sweep directory, a store's worker)."""
