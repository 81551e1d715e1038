"""Long polls of the agents: one Redis subscription per web process wakes them all.

A waiting desired-state request holds a thread of the web worker and a
:class:`threading.Event`, nothing else: no Redis connection and no database connection.
One listener thread per process subscribes to every host's wake channel (a pattern
subscription) and sets the events of the requests waiting for that host. A thousand
agents waiting cost a thousand parked threads, not a thousand Redis clients (redis-py
pools 100 connections per process; Redis itself would see every poll subscribe and
unsubscribe).

Nothing is missed: a request registers before it re-reads the cached generation
(:func:`controlplane.services.generations.announce` writes the cache before it
publishes), and when the subscription is lost and made again every waiting request
re-reads it.

The same subscription keeps a per-process cache of generations coherent, so an agent that
is up to date is answered 304 without asking Redis: the listener drops a host's entry
before it wakes the host's waiters, a read that an announcement overtook (any message
since the read began) is not kept, and the whole cache is forgotten, and not used, while
there is no subscription; the process's own announcements drop their entries at once.
Entries also expire after ``GENERATION_TTL``, as Redis's do, so an announcement that
never reached Redis costs no more here than there. A poll that does not wait, made in
the instant between another process's announcement and its message reaching this one,
is answered with the old generation; the agent's next long poll is woken by the message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from controlplane import metrics
from controlplane.services import generations
from controlplane.services.logs import redis_text

log = logging.getLogger(__name__)

# How long a request waits for the listener's first subscription before answering at once.
SUBSCRIBE_PATIENCE = 1.0
RECONNECT_DELAY = 1.0
HEALTH_CHECK_INTERVAL = 15  # seconds: a silently dead subscription is found by a PING
REPORT_EVERY = 1.0  # seconds between updates of the waiting-polls gauge


class WakeHub:
    """The process's one subscription to the hosts' wake channels and who waits on it."""

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._lock = threading.Lock()
        self._waiters: dict[int, set[threading.Event]] = {}
        self._waiting = 0
        # host id -> (generation, monotonic expiry); valid only while subscribed
        self._generations: dict[int, tuple[int, float]] = {}
        self._announcements = 0  # messages heard: a read that saw this move is not kept
        self._subscribed = threading.Event()
        generations.tell_on_announce(self._forget)
        self._listener_pid: int | None = None
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()

    def wait(self, host_id: int, seen: int, seconds: float, current: Callable[[], int]) -> int:
        """Hold until the host's generation moves from ``seen`` or ``seconds`` pass.

        ``current`` reads the host's generation (from the cache); it is asked again each
        time the host's channel speaks, since a message may come from another Portside
        sharing the Redis server (channels are not per database). Returns the generation
        to answer with.
        """
        self._start_listening()
        deadline = time.monotonic() + seconds
        if not self._subscribed.wait(min(seconds, SUBSCRIBE_PATIENCE)):
            return current()  # no subscription now: answer at once, the agent asks again
        woken = threading.Event()
        with self._lock:
            self._waiters.setdefault(host_id, set()).add(woken)
            self._waiting += 1
        try:
            # Registered first, read second: a change announced in between is seen.
            generation = current()
            while generation == seen and (left := deadline - time.monotonic()) > 0:
                woken.wait(left)
                woken.clear()
                generation = current()
            return generation
        finally:
            with self._lock:
                self._waiting -= 1
                waiting = self._waiters.get(host_id)
                if waiting is not None:
                    waiting.discard(woken)
                    if not waiting:
                        del self._waiters[host_id]

    def generation(self, host_id: int, read: Callable[[], int]) -> int:
        """The host's generation from this process's cache, else from ``read`` (kept
        when no announcement was heard meanwhile and the subscription stands)."""
        self._start_listening()
        if self._subscribed.is_set():
            cached = self._generations.get(host_id)
            if cached is not None and cached[1] > time.monotonic():
                return cached[0]
        heard = self._announcements
        generation = read()
        with self._lock:
            if self._subscribed.is_set() and self._announcements == heard:
                expires = time.monotonic() + generations.GENERATION_TTL
                self._generations[host_id] = (generation, expires)
        return generation

    def close(self) -> None:
        """Stop the listener and close its connection (a web worker's listener just dies
        with the process)."""
        self._stop.set()
        generations.stop_telling(self._forget)
        if self._listener is not None and self._listener_pid == os.getpid():
            self._listener.join()

    def _start_listening(self) -> None:
        """Start this process's listener once (again in a forked child: threads do not
        survive a fork)."""
        pid = os.getpid()
        if self._listener_pid == pid:
            return
        with self._lock:
            if self._listener_pid == pid:
                return
            self._listener_pid = pid
            self._subscribed = threading.Event()
            self._waiters.clear()
            self._waiting = 0
            self._generations.clear()
            self._listener = threading.Thread(
                target=self._listen, name="portside-wake-hub", daemon=True
            )
            self._listener.start()

    def _listen(self) -> None:
        redis = Redis.from_url(
            self._redis_url,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            client_name=f"portside-wake-hub-{os.getpid()}",
        )
        reported = 0.0
        while not self._stop.is_set():
            pubsub = redis.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.psubscribe(generations.WAKE_PATTERN)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._receive(message)
                    reported = self._report(reported)
            except RedisError as exc:
                if self._subscribed.is_set():
                    log.warning("long polls: lost the wake-up subscription: %s", exc)
                self._unsubscribed()
                self._wake_everyone()  # they re-read the cache, then wait on
                self._stop.wait(RECONNECT_DELAY)
            finally:
                pubsub.close()
        redis.close()

    def _report(self, last: float) -> float:
        """Update the gauge of waiting polls about once a second (a gauge moved by every
        poll cost more than the rest of the wait)."""
        now = time.monotonic()
        if now - last < REPORT_EVERY:
            return last
        metrics.LONG_POLLS_WAITING.set(self._waiting)
        return now

    def _receive(self, message: dict[str, Any]) -> None:
        if message["type"] == "psubscribe":
            # Subscribed from here on; whatever was announced before, Redis's cache holds
            # (a read begun before now may predate an announcement: it is not kept).
            with self._lock:
                self._announcements += 1
                self._subscribed.set()
            self._wake_everyone()
            return
        if message["type"] != "pmessage":
            return
        host_id = generations.host_of_wake_channel(redis_text(message["channel"]))
        if host_id is None:
            return
        with self._lock:
            # Dropped before anyone wakes: a woken request reads the new generation.
            self._announcements += 1
            self._generations.pop(host_id, None)
            for woken in self._waiters.get(host_id, ()):
                woken.set()

    def _forget(self, host_ids: Collection[int]) -> None:
        """This process announced new generations: drop them before its message comes."""
        with self._lock:
            self._announcements += 1
            for host_id in host_ids:
                self._generations.pop(host_id, None)

    def _unsubscribed(self) -> None:
        """Announcements may be missed from now on: trust no cached generation."""
        with self._lock:
            self._subscribed.clear()
            self._announcements += 1
            self._generations.clear()

    def _wake_everyone(self) -> None:
        with self._lock:
            for waiting in self._waiters.values():
                for woken in waiting:
                    woken.set()
