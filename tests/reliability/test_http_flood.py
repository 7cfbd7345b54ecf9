"""The flood's answer reader on fixed bytes: a sized body, a chunked body and a closing answer are
consumed whole, so the next answer on a keep-alive connection starts where it should."""

from __future__ import annotations

import asyncio

from rohde.reliability.http_flood import _read_answer


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_answers_are_consumed_whole() -> None:
    async def body() -> list[tuple[int, bool]]:
        reader = _reader(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
                         b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                         b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return [await _read_answer(reader) for _ in range(3)]

    assert asyncio.run(body()) == [(200, True), (503, True), (404, False)]
