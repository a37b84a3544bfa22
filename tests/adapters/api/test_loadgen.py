"""The benchmark's load generator: it measures what it sends, and sends only to loopback."""

from __future__ import annotations

import asyncio

import pytest

from bench.loadgen import request_bytes, run_load


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.1", "8.8.8.8"])
def test_it_refuses_any_address_but_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        asyncio.run(run_load(host, 80, [b""], connections=1, duration=0.1))


def test_it_counts_statuses_and_latencies_of_a_real_loopback_server() -> None:
    # Given a tiny HTTP server on loopback that answers 200 and then 404, alternately
    async def scenario() -> tuple[dict[int, int], int]:
        answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"]

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            i = 0
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(answers[i % 2])
                    i += 1
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            # When 10 requests are sent over one connection
            result = await run_load("127.0.0.1", port, [request_bytes("GET", "/", "127.0.0.1", port, {})],
                                    connections=1, duration=5, max_requests=10)
        return result.statuses, len(result.latencies)

    statuses, measured = asyncio.run(scenario())
    # Then every answer is counted by status and timed
    assert statuses == {200: 5, 404: 5} and measured == 10
