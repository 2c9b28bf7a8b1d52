"""A libp2p gossipsub node for asyncio code.

py-libp2p runs on trio, so each `P2PNode` runs its host in a dedicated daemon thread with its
own trio loop. Calls cross into trio with `TrioToken.run_sync_soon`; messages cross back with
`loop.call_soon_threadsafe` into unbounded `asyncio.Queue`s, so delivery to the caller never
drops a message (a consumer that stops reading grows its queue instead).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import multiaddr
import outcome
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from libp2p import new_host
from libp2p.crypto.ed25519 import Ed25519PrivateKey as Libp2pEd25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

from shardnet.errors import ShardnetError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# ---- settings changed from py-libp2p 0.8.1 defaults, and why ----------------------------
# host.connect waits a fixed 250 ms for extra connections unless one per peer is the limit.
MAX_CONNECTIONS_PER_PEER = 1
# Default 10/s per (forwarder, topic) silently drops the rest, including our own publishes:
# a burst of 100 ads (or a relay forwarding many workers' ads) would lose most of them.
MAX_MESSAGES_PER_TOPIC_PER_SECOND = 10_000.0
# Default 120 s; go-libp2p uses 1 s. The heartbeat repairs the mesh and emits IHAVE gossip,
# which recovers messages a peer missed; 2 minutes is longer than an ad's TTL.
HEARTBEAT_INTERVAL_S = 1
# Every publish waits until each peer's outbound queue (fixed at 32 RPCs, full = dropped)
# is at most this full, so a burst turns into back-pressure instead of silent loss.
OUTBOUND_HIGH_WATER = 16
# GossipSub buffers a copy of every forwarded message for each connected peer whose
# subscription it has not seen, to cover the race at connect time. A peer that never
# subscribes (a worker that only publishes) keeps that buffer full: at the default 100 / 30 s
# it logs a warning on every message. The race resolves in milliseconds, so keep 5 s of
# buffer with room for ~200 messages/s of ads before anything is trimmed.
PENDING_MESSAGES_TTL_S = 5.0
MAX_PENDING_MESSAGES_PER_PEER = 1000
# Protocols offered, newest first. 1.3+ add experimental extensions we do not use.
GOSSIPSUB_PROTOCOLS = (PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID)

BOOTSTRAP_BACKOFF_MIN_S = 0.1
BOOTSTRAP_BACKOFF_MAX_S = 5.0
BOOTSTRAP_CHECK_S = 1.0


class P2PError(ShardnetError):
    """The p2p node could not start, or was used after it closed."""

    code = grpc.StatusCode.UNAVAILABLE


def libp2p_key_pair(private_key: Ed25519PrivateKey) -> KeyPair:
    """The libp2p key pair of a `cryptography` Ed25519 key (same key, same peer id)."""
    seed = private_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    secret = Libp2pEd25519PrivateKey.from_bytes(seed)
    return KeyPair(secret, secret.get_public_key())


def peer_id_of(private_key: Ed25519PrivateKey) -> str:
    """libp2p's own peer id for this key (the pure `ads.peer_id_from_key` must agree)."""
    return ID.from_pubkey(libp2p_key_pair(private_key).public_key).to_base58()


class _DeliveringPubsub(Pubsub):
    """Pubsub that hands each message for a local subscription straight to callbacks.

    The stock path buffers them in a 32-slot trio channel and drops the rest when full; the
    callbacks here only schedule a `put_nowait` on an unbounded asyncio queue, so nothing is
    lost between libp2p and the caller.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sinks: dict[str, list[Callable[[bytes], None]]] = {}

    async def _handle_new_peer(self, peer_id: ID) -> None:
        # py-libp2p sends our topics in the new stream's hello and announces later joins to
        # registered peers, but a topic joined while the hello is being written reaches
        # neither, and that peer never learns it. Announce topics joined meanwhile again
        # (a repeated announcement is harmless).
        topics_before = set(self.topic_ids)
        await super()._handle_new_peer(peer_id)
        queue = self.peer_queues.get(peer_id)
        if queue is None:
            return
        for topic in set(self.topic_ids) - topics_before:
            packet, _ = self._build_announce_rpc(topic, subscribe=True)
            queue.push(packet, priority=True)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        for topic in publish_message.topicIDs:
            for sink in self.sinks.get(topic, ()):
                sink(publish_message.data)


@dataclass(frozen=True)
class _Signals:
    """Futures of the starting asyncio task that the trio thread resolves."""

    loop: asyncio.AbstractEventLoop
    ready: asyncio.Future[None]
    first_peer: asyncio.Future[None]

    def succeed(self, future: asyncio.Future[None]) -> None:
        self._resolve(future, None)

    def fail(self, future: asyncio.Future[None], exc: BaseException) -> None:
        self._resolve(future, exc)

    def _resolve(self, future: asyncio.Future[None], exc: BaseException | None) -> None:
        def apply() -> None:
            if future.done():
                return
            if exc is None:
                future.set_result(None)
            else:
                future.set_exception(exc)

        try:
            self.loop.call_soon_threadsafe(apply)
        except RuntimeError:
            pass  # the asyncio loop closed; nobody is waiting any more


class P2PNode:
    """One libp2p host with GossipSub, running in its own thread, driven from asyncio.

    Make one with `await P2PNode.start(...)` (or `async with await P2PNode.start(...)`).
    Its peer id is derived from the given Ed25519 key, the same key that signs its ads.
    """

    def __init__(self, private_key: Ed25519PrivateKey, loop: asyncio.AbstractEventLoop) -> None:
        self._key_pair = libp2p_key_pair(private_key)
        self._loop = loop
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._publish_lock = trio.Lock()
        self._pubsub: _DeliveringPubsub | None = None
        self._host: Any = None
        self._peer_id = ID.from_pubkey(self._key_pair.public_key).to_base58()
        self._listen_addrs: list[str] = []
        self._close_task: asyncio.Task[None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    @classmethod
    async def start(
        cls,
        private_key: Ed25519PrivateKey,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        bootstrap: Sequence[str] = (),
        bootstrap_wait_s: float = 5.0,
        start_timeout_s: float = 15.0,
    ) -> P2PNode:
        """Start listening on `listen_host:listen_port` (0: any free port) and dial `bootstrap`.

        `bootstrap` holds full multiaddrs ending in `/p2p/<peer id>`. Each is dialled in the
        background with exponential backoff and re-dialled whenever the connection drops.
        Returns once listening and either one bootstrap peer is connected or
        `bootstrap_wait_s` has passed; unreachable bootstrap peers never make it fail.
        Raises `P2PError` if the host cannot start within `start_timeout_s`.
        """
        try:
            peers = [info_from_p2p_addr(multiaddr.Multiaddr(a)) for a in bootstrap]
        except Exception as exc:  # multiaddr raises several types for malformed addresses
            raise P2PError(f"bad bootstrap multiaddr: {exc}") from exc
        loop = asyncio.get_running_loop()
        node = cls(private_key, loop)
        listen = multiaddr.Multiaddr(f"{_host_part(listen_host)}/tcp/{listen_port}")
        signals = _Signals(loop, loop.create_future(), loop.create_future())
        node._thread = threading.Thread(
            target=node._thread_main,
            args=(listen, peers, signals),
            name=f"p2p[{node._peer_id[-8:]}]",
            daemon=True,
        )
        node._thread.start()
        try:
            async with asyncio.timeout(start_timeout_s):
                await signals.ready
        except BaseException as exc:
            await node.close()
            if isinstance(exc, TimeoutError):
                raise P2PError(f"p2p host did not start within {start_timeout_s} s") from exc
            raise
        if peers:
            try:
                async with asyncio.timeout(bootstrap_wait_s):
                    await signals.first_peer
            except TimeoutError:
                logger.warning("no bootstrap peer reachable yet; still retrying in background")
        return node

    async def close(self) -> None:
        """Stop the host and join its thread. Idempotent; concurrent calls wait together."""
        if self._close_task is None:
            self._close_task = asyncio.create_task(
                self._close(), name=f"p2p[{self._peer_id}].close"
            )
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        if self._token is not None and self._stop is not None:
            try:
                self._token.run_sync_soon(self._stop.set)
            except trio.RunFinishedError:
                pass
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    async def __aenter__(self) -> P2PNode:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- identity -----------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def listen_addrs(self) -> list[str]:
        """Full multiaddrs (`.../tcp/<port>/p2p/<peer id>`) another node can bootstrap from."""
        return list(self._listen_addrs)

    # ---- pubsub -------------------------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        """Sign `data` as this peer and gossip it on `topic`.

        Waits (back-pressure) while any peer's outbound queue is near full, so bursts are
        delayed rather than dropped. Raises `P2PError` if the node is closed.
        """

        async def publish_in_trio() -> None:
            pubsub = self._require_pubsub()
            # One publish at a time (in call order), so only one task waits for room.
            async with self._publish_lock:
                # RpcQueue signals pushes but not pops, so room can only be polled for.
                while _fullest_queue(pubsub) > OUTBOUND_HIGH_WATER:  # noqa: ASYNC110
                    await trio.sleep(0.001)
                await pubsub.publish(topic, data)

        await self._run_in_trio(publish_in_trio)

    async def subscribe(self, topic: str) -> asyncio.Queue[bytes]:
        """Join `topic`; every message on it (including our own) is put on the returned queue.

        Each call returns a new queue that sees every later message. The queue is unbounded:
        read it, or it grows.
        """
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def sink(data: bytes) -> None:
            self._loop.call_soon_threadsafe(queue.put_nowait, data)

        async def subscribe_in_trio() -> None:
            pubsub = self._require_pubsub()
            pubsub.sinks.setdefault(topic, []).append(sink)
            await pubsub.subscribe(topic)

        await self._run_in_trio(subscribe_in_trio)
        return queue

    async def topic_peers(self, topic: str) -> list[str]:
        """Peers we hold a pubsub stream with that told us they subscribe to `topic`."""

        async def read() -> list[str]:
            pubsub = self._require_pubsub()
            live = set(pubsub.peers)
            return sorted(str(p) for p in pubsub.peer_topics.get(topic, ()) if p in live)

        return await self._run_in_trio(read)

    async def connected_peers(self) -> list[str]:
        async def read() -> list[str]:
            return sorted(str(p) for p in self._host.get_connected_peers())

        return await self._run_in_trio(read)

    # ---- the trio side ------------------------------------------------------------------

    def _require_pubsub(self) -> _DeliveringPubsub:
        if self._pubsub is None:
            raise P2PError("p2p node is not running")
        return self._pubsub

    async def _run_in_trio(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` as a task in the node's trio loop and await its result from asyncio.

        Raises `P2PError` if the node is closed or closes meanwhile. If the awaiting asyncio
        task is cancelled, the trio task still runs to completion.
        """
        token, nursery = self._token, self._nursery
        if token is None or nursery is None or self._close_task is not None:
            raise P2PError("p2p node is closed")
        loop = self._loop
        result: asyncio.Future[T] = loop.create_future()

        def deliver(res: outcome.Outcome[T]) -> None:
            if result.cancelled():
                return
            if isinstance(res, outcome.Value):
                result.set_result(res.value)
            elif isinstance(res.error, trio.Cancelled):
                result.set_exception(P2PError("p2p node closed during the call"))
            else:
                result.set_exception(res.error)

        def report(res: outcome.Outcome[T]) -> None:
            try:
                loop.call_soon_threadsafe(deliver, res)
            except RuntimeError:
                pass  # the asyncio loop closed; nobody is waiting any more

        async def task() -> None:
            report(await outcome.acapture(fn))

        def spawn() -> None:
            try:
                nursery.start_soon(task)
            except RuntimeError:  # the nursery closed: the node is shutting down
                report(outcome.Error(P2PError("p2p node is closing")))

        try:
            token.run_sync_soon(spawn)
        except trio.RunFinishedError as exc:
            raise P2PError("p2p node is closed") from exc
        return await result

    def _thread_main(
        self, listen: multiaddr.Multiaddr, bootstrap: list[PeerInfo], signals: _Signals
    ) -> None:
        try:
            trio.run(self._trio_main, listen, bootstrap, signals)
        except BaseException as exc:  # report any crash to start(); the thread ends either way
            logger.exception("p2p host %s stopped with an error", self._peer_id)
            signals.fail(signals.ready, P2PError(f"p2p host failed: {exc!r}"))
        finally:
            self._pubsub = None
            signals.fail(signals.ready, P2PError("p2p host stopped before it was ready"))

    async def _trio_main(
        self, listen: multiaddr.Multiaddr, bootstrap: list[PeerInfo], signals: _Signals
    ) -> None:
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        host = new_host(
            key_pair=self._key_pair,
            listen_addrs=[listen],
            connection_config=ConnectionConfig(max_connections_per_peer=MAX_CONNECTIONS_PER_PEER),
        )
        gossipsub = GossipSub(
            protocols=list(GOSSIPSUB_PROTOCOLS),
            degree=6,
            degree_low=4,
            degree_high=12,
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            max_messages_per_topic_per_second=MAX_MESSAGES_PER_TOPIC_PER_SECOND,
            max_pending_messages_per_peer=MAX_PENDING_MESSAGES_PER_PEER,
            pending_messages_ttl=PENDING_MESSAGES_TTL_S,
        )
        pubsub = _DeliveringPubsub(host, gossipsub)
        try:
            # Pubsub and its router must run before the host accepts streams: an inbound
            # pubsub stream that arrives first crashes the host.
            async with background_trio_service(pubsub), background_trio_service(gossipsub):
                async with host.run(listen_addrs=[listen]):
                    await pubsub.wait_until_ready()
                    await self._serve(host, pubsub, bootstrap, signals)
        finally:
            # Pubsub never stops the sweeper thread of its seen-message cache itself.
            pubsub.seen_messages.stop()

    async def _serve(
        self, host: Any, pubsub: _DeliveringPubsub, bootstrap: list[PeerInfo], signals: _Signals
    ) -> None:
        """Keep bootstrap peers connected and serve calls from asyncio until `close()`."""
        assert self._stop is not None
        self._host, self._pubsub = host, pubsub
        self._listen_addrs = [f"{a}/p2p/{self._peer_id}" for a in host.get_transport_addrs()]
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            connected = trio.Event()
            for peer in bootstrap:
                nursery.start_soon(self._keep_connected, host, peer, connected)
            signals.succeed(signals.ready)

            async def report_first_peer() -> None:
                await connected.wait()
                signals.succeed(signals.first_peer)

            if bootstrap:
                nursery.start_soon(report_first_peer)
            await self._stop.wait()
            self._pubsub = None
            nursery.cancel_scope.cancel()

    async def _keep_connected(self, host: Any, peer: PeerInfo, connected: trio.Event) -> None:
        """Dial `peer` until connected, with exponential backoff; re-dial if it drops."""
        backoff = BOOTSTRAP_BACKOFF_MIN_S
        while True:
            if peer.peer_id in host.get_connected_peers():
                backoff = BOOTSTRAP_BACKOFF_MIN_S
                await trio.sleep(BOOTSTRAP_CHECK_S)
                continue
            try:
                await host.connect(peer)
            except Exception as exc:  # dial errors come in many types; all mean "retry later"
                logger.debug("bootstrap dial to %s failed: %s", peer.peer_id, exc)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, BOOTSTRAP_BACKOFF_MAX_S)
            else:
                connected.set()


def _fullest_queue(pubsub: Pubsub) -> int:
    return max((len(q) for q in pubsub.peer_queues.values()), default=0)


def _host_part(host: str) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"/dns/{host}"
    return f"/ip{ip.version}/{ip}"
