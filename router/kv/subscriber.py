"""The asyncio ZMQ client that feeds one replica's KV events into a :class:`KvIndex`.

Sockets, per replica (wire format: :mod:`router.kv.events`):

- a SUB socket on the engine's ``kv_events_config.endpoint``. vLLM's publisher *binds* only an
  endpoint with a wildcard (``tcp://*:port``, every interface) or an ``ipc://``/``inproc://``
  one, and *connects* to any other. To keep traffic on loopback, give the engine
  ``tcp://127.0.0.1:port`` and start this subscriber with ``bind=True``: the subscriber binds
  there and the engine's PUB connects to it (and reconnects after an engine restart);
- a DEALER socket connected to the engine's ``replay_endpoint`` (the engine always binds that
  one, so ``tcp://127.0.0.1:port`` stays on loopback), when it has one.

Behaviour: every batch goes to :meth:`KvIndex.apply`; a replay request the index returns is sent
at once, and the replay ends at the publisher's end marker or after ``replay_timeout`` seconds,
whichever comes first (:meth:`KvIndex.end_replay`). A socket monitor reports the publisher's
connections: on a lost connection the replica becomes untrusted, and on every new connection
the replica is resynced (dropped, then replayed from seq 0): that recovers the batches a
publisher sends before the subscription reaches it, and covers an engine that restarted
behind the same endpoint. :meth:`close` stops the tasks and closes the
sockets (linger 0); the ZMQ context is the caller's or pyzmq's shared one and is left open.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Self

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from router.kv.events import (
    END_SEQ,
    EventDecodeError,
    decode_message,
    decode_seq,
    encode_seq,
)
from router.kv.index import KvIndex, ReplayRequest

logger = logging.getLogger(__name__)


@dataclass
class SubscriberStats:
    """Counters of one subscriber, for metrics."""

    batches: int = 0
    replayed_batches: int = 0
    replays: int = 0
    replay_timeouts: int = 0
    decode_errors: int = 0
    connections: int = 0
    disconnections: int = 0


class KvEventSubscriber:
    """Feeds ``replica``'s events into ``index`` from :meth:`start` until :meth:`close`."""

    def __init__(
        self,
        index: KvIndex,
        replica: str,
        endpoint: str,
        *,
        replay_endpoint: str | None = None,
        bind: bool = False,
        topic: str = "",
        replay_timeout: float = 2.0,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.index = index
        self.replica = replica
        self.endpoint = endpoint
        self.replay_endpoint = replay_endpoint
        self.bind = bind
        self.topic = topic
        self.replay_timeout = replay_timeout
        self.stats = SubscriberStats()
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sub: zmq.asyncio.Socket | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._replay: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task] = []
        self._replay_timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Open the sockets, register the replica in the index and start reading; returns once
        the SUB socket is bound or connecting (not once the publisher is connected)."""
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, self.topic.encode())
        self._monitor = self._sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        (self._sub.bind if self.bind else self._sub.connect)(self.endpoint)
        if self.replay_endpoint:
            self._replay = self._ctx.socket(zmq.DEALER)
            self._replay.setsockopt(zmq.LINGER, 0)
            self._replay.connect(self.replay_endpoint)
        request = self.index.add_replica(self.replica, replay_available=self._replay is not None)
        loops = [self._read_live(), self._read_connections()]
        if self._replay is not None:
            loops.append(self._read_replays())
        self._tasks = [asyncio.create_task(loop, name=f"kv-events-{self.replica}") for loop in loops]
        for task in self._tasks:
            task.add_done_callback(self._report_failure)
        self._ask_replay(request)

    async def close(self) -> None:
        """Stop reading and close the sockets; the replica stays in the index (remove it there
        when the replica is gone). Calling it again does nothing."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # failures were logged as they happened
        if self._replay_timer is not None:
            self._replay_timer.cancel()
        if self._sub is not None:
            self._sub.disable_monitor()
        for sock in (self._monitor, self._replay, self._sub):
            if sock is not None:
                sock.close(linger=0)
        self._sub = self._monitor = self._replay = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _read_live(self) -> None:
        assert self._sub is not None  # set by start()
        while True:
            frames = await self._sub.recv_multipart()
            try:
                batch = decode_message(frames)
            except EventDecodeError as e:
                self.stats.decode_errors += 1  # its seq then shows as a gap: handled there
                logger.warning("undecodable KV event message from %s: %s", self.replica, e)
                continue
            self.stats.batches += 1
            self._ask_replay(self.index.apply(self.replica, batch))

    async def _read_replays(self) -> None:
        assert self._replay is not None  # set by start()
        while True:
            _, *frames = await self._replay.recv_multipart()  # without the DEALER's empty frame
            try:
                if len(frames) == 3 and decode_seq(frames[1]) == END_SEQ:
                    self._end_replay()
                    continue
                batch = decode_message(frames)
            except EventDecodeError as e:
                self.stats.decode_errors += 1
                logger.warning("undecodable KV event replay from %s: %s", self.replica, e)
                continue
            self.stats.replayed_batches += 1
            self.index.apply(self.replica, batch, replayed=True)

    async def _read_connections(self) -> None:
        assert self._monitor is not None  # set by start()
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())["event"]
            if event == zmq.EVENT_DISCONNECTED:
                self.stats.disconnections += 1
                self.index.disconnected(self.replica)
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                # A new connection may be a new publisher, and batches sent before the
                # subscription reached it are lost: read its buffer from the start.
                self.stats.connections += 1
                self._ask_replay(self.index.resync(self.replica))

    def _report_failure(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            # No more events will come: stop trusting what the index holds for this replica.
            self.index.disconnected(self.replica)
            logger.error("KV event reader for %s stopped", self.replica, exc_info=task.exception())

    def _ask_replay(self, request: ReplayRequest | None) -> None:
        if request is None:
            return
        if self._replay is None:  # the index knows there is no replay socket; nothing to wait for
            self.index.end_replay(self.replica)
            return
        self.stats.replays += 1
        try:
            self._replay.send_multipart((b"", encode_seq(request.start_seq)), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.index.end_replay(self.replica)  # no way to ask now: the index starts a new run
            return
        if self._replay_timer is not None:
            self._replay_timer.cancel()
        self._replay_timer = asyncio.get_running_loop().call_later(self.replay_timeout, self._replay_timed_out)

    def _replay_timed_out(self) -> None:
        self.stats.replay_timeouts += 1
        self._replay_timer = None
        self.index.end_replay(self.replica)

    def _end_replay(self) -> None:
        if self._replay_timer is not None:
            self._replay_timer.cancel()
            self._replay_timer = None
        self.index.end_replay(self.replica)
