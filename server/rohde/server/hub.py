"""WebSocket fan-out: every client has its own bounded queue and its own sender task.

`publish` only appends to each client's queue (dropping and counting the oldest message when the
queue is full) and wakes its sender, so a slow client never stalls the pipeline or the other
clients. Pipeline threads call `publish_threadsafe` or `publish_many_threadsafe` (a batch, one
wake-up of the loop), which hop onto the event loop. `close_all` asks every client's handler to
send what is queued and then a close frame (the server is stopping).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rohde.server.messages import ServerMessage

logger = logging.getLogger(__name__)


@dataclass
class Client:
    client_id: int
    stream_filter: str | None  # only messages of this stream (status messages without a stream pass)
    maxlen: int
    queue: deque[str] = field(init=False)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    dropped: int = 0
    close_code: int | None = None  # set by Hub.close_all: send the queue, then close with this code
    close_reason: str = ""

    def __post_init__(self) -> None:
        self.queue = deque(maxlen=self.maxlen)


class Hub:
    """Registry of WebSocket clients; lives on the event loop."""

    def __init__(self, *, queue_size: int, on_drop: Callable[[int], None] | None = None) -> None:
        self.queue_size = queue_size
        self._clients: dict[int, Client] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_drop = on_drop
        self.published = 0
        self._closing: tuple[int, str] | None = None  # (code, reason) once close_all ran

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def register(self, stream_filter: str | None = None) -> Client:
        client = Client(next(self._ids), stream_filter, self.queue_size)
        if self._closing is not None:  # registered during shutdown: closed at once
            client.close_code, client.close_reason = self._closing
        self._clients[client.client_id] = client
        return client

    def unregister(self, client: Client) -> None:
        self._clients.pop(client.client_id, None)

    @property
    def clients(self) -> list[Client]:
        return list(self._clients.values())

    def publish(self, message: ServerMessage) -> None:
        """Queue `message` for every client that wants it (event-loop thread only)."""
        text = message.model_dump_json()
        stream_id = message.stream_id
        self.published += 1
        for client in list(self._clients.values()):
            if client.stream_filter and stream_id is not None and stream_id != client.stream_filter:
                continue
            if len(client.queue) == client.maxlen:
                client.dropped += 1  # deque(maxlen) drops the oldest on append
                if self._on_drop is not None:
                    self._on_drop(1)
            client.queue.append(text)
            client.wake.set()

    def publish_threadsafe(self, message: ServerMessage) -> None:
        self.publish_many_threadsafe((message,))

    def publish_many_threadsafe(self, messages: Sequence[ServerMessage]) -> None:
        """Queue `messages` from another thread, in order: one wake-up of the event loop for all of them (the
        inference loop publishes each batch's decisions together)."""
        loop = self._loop
        if loop is None or loop.is_closed() or not messages:
            return
        try:
            loop.call_soon_threadsafe(self._publish_many, tuple(messages))
        except RuntimeError:  # the loop is shutting down
            logger.debug("Event loop closed; %d messages not delivered.", len(messages))

    def _publish_many(self, messages: Sequence[ServerMessage]) -> None:
        for message in messages:
            self.publish(message)

    @property
    def closing(self) -> bool:
        """True once `close_all` ran."""
        return self._closing is not None

    def close_all(self, code: int, reason: str) -> None:
        """Ask every client, present and future, to close with `code` once its queue is sent (event-loop
        thread only). Publish the farewell message first so it is the last one each client gets."""
        self._closing = (code, reason)
        for client in list(self._clients.values()):
            client.close_code, client.close_reason = code, reason
            client.wake.set()

    @staticmethod
    async def next_message(client: Client) -> str:
        """Wait for and pop the oldest queued message of `client`."""
        while not client.queue:
            client.wake.clear()
            await client.wake.wait()
        return client.queue.popleft()

    @staticmethod
    async def next_to_send(client: Client) -> str | None:
        """Like `next_message`, but None once the queue is empty and the client was asked to close."""
        while not client.queue:
            if client.close_code is not None:
                return None
            client.wake.clear()
            await client.wake.wait()
        return client.queue.popleft()
