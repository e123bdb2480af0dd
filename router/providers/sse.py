"""Server-sent events: the ``data`` payloads of an event stream, one per event."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable


async def sse_data(lines: AsyncIterable[str]) -> AsyncGenerator[str, None]:
    """Yield the data of each event in ``lines`` (decoded lines without their line breaks).

    Multi-line data is joined with newlines; events without data, comments and other fields
    (``event:``, ``id:``, ``retry:``) are skipped. A final event without its blank line still
    counts, since some servers close the stream right after it.
    """
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        yield "\n".join(data)
