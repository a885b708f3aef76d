"""Exception types. Every message names the file, line, protein or key at fault."""


class InterPLMError(Exception):
    """Base class of the errors this project raises on purpose."""


class InputError(InterPLMError, ValueError):
    """Bad user input: a malformed file, an invalid option, an unknown key (CLI exit status 2)."""


class StoreError(InputError):
    """An activation store that is missing, incomplete, of another format or inconsistent."""


class LockedError(InputError):
    """Another process is writing the same output (a sweep directory, a store's worker)."""


class StoreDamage(StoreError):
    """Stored rows that do not read back: a chunk with a bad checksum, truncated or missing.

    ``detail`` is the storage layer's own account (e.g. which chunk file is missing)."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail
