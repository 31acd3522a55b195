"""A third-party exception as a clause for one of our one-sentence errors."""


def reason(err: Exception) -> str:
    """The first non-empty line of the message (frameworks append pages of context), without a final period."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0][:300] if lines else type(err).__name__).rstrip(".")
