"""A module that fails while importing: its traceback is the user's to read."""


def helper() -> None:
    raise RuntimeError("cli_raises exploded on import")


helper()
