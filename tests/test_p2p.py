"""Discovery: signed ads are parsed strictly and trusted only when fresh, signed and new;
real libp2p nodes on loopback relay them, lose nothing in a burst, and close cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import hashlib
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from shardnet.errors import ShardnetError
from shardnet.p2p.ads import (
    MAX_AD_BYTES,
    MAX_FUTURE_SKEW_S,
    AdBook,
    AdRejected,
    Advertisement,
    PeerId,
    Reason,
    cert_fingerprint,
    decode,
    encode,
    peer_id_from_key,
    public_key_bytes,
    verify,
)

NOW = 1_800_000_000.0
KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def _self_signed_pem(key: Ed25519PrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "worker")])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .sign(key, None)
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


CERT_PEM = _self_signed_pem(KEY)


def make_ad(key: Ed25519PrivateKey = KEY, **changes: object) -> Advertisement:
    peer_key = public_key_bytes(key)
    ad = Advertisement(
        peer_key=peer_key,
        peer_id=peer_id_from_key(peer_key),
        endpoint="127.0.0.1:50051",
        cert_sha256=cert_fingerprint(CERT_PEM),
        cert_pem=CERT_PEM,
        chain_address="0x" + "ab" * 20,
        models=(("mlp", hashlib.sha256(b"mlp").hexdigest()),),
        hardware={"cpu_count": 8, "memory_bytes": 2**34, "providers": ["CPU"], "gpus": []},
        price_per_row_wei=1000,
        timestamp=NOW,
        seq=1,
        ttl_s=10.0,
    )
    return dataclasses.replace(ad, **changes)


def signed(key: Ed25519PrivateKey = KEY, **changes: object) -> bytes:
    return encode(make_ad(key, **changes), key)


def rewritten(data: bytes, **fields: object) -> bytes:
    """`data` with JSON fields replaced (or removed, for None), signature left as it was."""
    obj = json.loads(data)
    for name, value in fields.items():
        if value is None:
            del obj[name]
        else:
            obj[name] = value
    return json.dumps(obj).encode()


def rejected(data: bytes, now: float = NOW, book: AdBook | None = None) -> Reason:
    with pytest.raises(AdRejected) as info:
        (book or AdBook()).accept(data, now)
    assert isinstance(info.value, ShardnetError)
    return info.value.reason


# ---- encoding ----------------------------------------------------------------------------


def test_encode_decode_round_trip():
    ad = make_ad()
    data = encode(ad, KEY)
    assert decode(data) == ad and verify(data) == ad
    assert encode(ad, KEY) == data, "the encoding is canonical"
    assert json.loads(data)["peer_key"] == ad.peer_key.hex()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
sha256_hex = st.binary(min_size=1).map(lambda b: hashlib.sha256(b).hexdigest())


@settings(max_examples=50, deadline=None)
@given(
    models=st.lists(st.tuples(st.text(min_size=1, max_size=12), sha256_hex), max_size=4),
    hardware=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    price=st.integers(0, 10**30),
    timestamp=st.floats(0, 4e9, allow_nan=False),
    seq=st.integers(0, 2**64),
    ttl=st.floats(0.001, 1e6),
    no_tls=st.booleans(),
)
def test_any_valid_ad_round_trips(models, hardware, price, timestamp, seq, ttl, no_tls):
    tls = {"cert_pem": "", "cert_sha256": ""} if no_tls else {}
    ad = make_ad(
        models=tuple(models),
        hardware=hardware,
        price_per_row_wei=price,
        timestamp=timestamp,
        seq=seq,
        ttl_s=ttl,
        chain_address="",
        **tls,
    )
    assert verify(encode(ad, KEY)) == ad


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 10**6), bit=st.integers(0, 7))
def test_any_bit_flip_is_rejected(position, bit):
    data = bytearray(signed())
    data[position % len(data)] ^= 1 << bit
    with pytest.raises(AdRejected):
        verify(bytes(data))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_garbage_only_ever_raises_ad_rejected(data):
    with pytest.raises(AdRejected):
        decode(data)


def test_encode_refuses_a_key_that_is_not_the_ads():
    with pytest.raises(ValueError, match="peer_key"):
        encode(make_ad(), OTHER_KEY)


def test_pure_peer_id_matches_libp2p():
    from shardnet.p2p.node import peer_id_of

    for key in (KEY, OTHER_KEY, Ed25519PrivateKey.generate()):
        pure = peer_id_from_key(public_key_bytes(key))
        assert pure == peer_id_of(key) and pure.startswith("12D3KooW")


# ---- every rejection reason ----------------------------------------------------------------


def test_oversize_is_rejected_before_parsing():
    data = signed(hardware={"pad": "x" * MAX_AD_BYTES})
    assert rejected(data) is Reason.OVERSIZE


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe",
        b"not json",
        b"[]",
        rewritten(signed(), extra="field"),
        rewritten(signed(), seq=None),
        rewritten(signed(), seq="2"),
        rewritten(signed(), seq=True),
        rewritten(signed(), seq=-1),
        rewritten(signed(), ttl_s=0),
        rewritten(signed(), hardware=[]),
        rewritten(signed(), peer_key="00" * 31),
        rewritten(signed(), peer_key="AB" * 32),
        rewritten(signed(), endpoint="no-port"),
        rewritten(signed(), models=[["mlp", "not-a-sha"]]),
        rewritten(signed(), chain_address="0x123"),
        rewritten(signed(), cert_sha256=""),
        rewritten(signed(), cert_pem="-----BEGIN CERTIFICATE-----\nnope"),
        rewritten(signed(), timestamp=float("nan")),
        signed().replace(b'"seq":1', b'"seq":1,"seq":1'),
    ],
)
def test_malformed_is_rejected(data):
    assert rejected(data) is Reason.MALFORMED


def test_forged_signature_is_rejected():
    victim = make_ad()
    # Signed by another key but claiming the victim's identity.
    forged_sig = OTHER_KEY.sign(b"anything").hex()
    assert rejected(rewritten(encode(victim, KEY), signature=forged_sig)) is Reason.BAD_SIGNATURE
    # A valid signature over different content.
    assert rejected(rewritten(signed(), price_per_row_wei=1)) is Reason.BAD_SIGNATURE


def test_peer_id_that_is_not_the_keys_is_rejected():
    other_id = peer_id_from_key(public_key_bytes(OTHER_KEY))
    assert rejected(signed(peer_id=other_id)) is Reason.PEER_ID_MISMATCH
    assert rejected(signed(peer_id=PeerId("12D3KooWnot-an-id"))) is Reason.PEER_ID_MISMATCH


def test_certificate_that_is_not_the_fingerprinted_one_is_rejected():
    other = _self_signed_pem(OTHER_KEY)
    assert rejected(signed(cert_pem=other)) is Reason.CERT_MISMATCH


def test_expired_and_future_ads_are_rejected():
    assert rejected(signed(timestamp=NOW - 10.001, ttl_s=10.0)) is Reason.EXPIRED
    assert AdBook().accept(signed(timestamp=NOW - 10.0, ttl_s=10.0), NOW) is not None
    ahead = NOW + MAX_FUTURE_SKEW_S
    assert rejected(signed(timestamp=ahead + 0.01)) is Reason.FROM_FUTURE
    assert AdBook().accept(signed(timestamp=ahead), NOW) is not None


def test_replayed_older_ad_is_rejected_and_redelivery_is_a_duplicate():
    book = AdBook()
    first, second = signed(seq=1), signed(seq=2, timestamp=NOW + 1)
    assert book.accept(first, NOW) == decode(first)
    assert book.accept(second, NOW + 1) == decode(second)
    assert rejected(first, NOW + 1, book) is Reason.REPLAY
    assert rejected(signed(seq=2, price_per_row_wei=1), NOW + 1, book) is Reason.REPLAY
    assert book.accept(second, NOW + 1.5) is None, "gossip re-delivery is not an error"
    assert book.current() == [decode(second)]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=12))
def test_only_strictly_increasing_seqs_are_accepted(seqs):
    book, best = AdBook(), -1
    for seq in seqs:
        data = signed(seq=seq, timestamp=NOW + seq / 100)
        if seq > best:
            assert book.accept(data, NOW) is not None
            best = seq
        elif seq == best:
            assert book.accept(data, NOW) is None
        else:
            assert rejected(data, NOW, book) is Reason.REPLAY
    assert [ad.seq for ad in book.current()] == [best]


def test_expire_drops_stale_ads_but_remembers_their_seq():
    book = AdBook()
    book.accept(signed(KEY, seq=5, ttl_s=10.0), NOW)
    book.accept(signed(OTHER_KEY, seq=1, ttl_s=30.0), NOW)
    assert len(book.current()) == 2
    assert book.expire(NOW + 10.0) == []
    [gone] = book.expire(NOW + 10.5)
    assert gone.peer_key == public_key_bytes(KEY)
    assert [ad.peer_key for ad in book.current()] == [public_key_bytes(OTHER_KEY)]
    assert rejected(signed(KEY, seq=4, timestamp=NOW + 11), NOW + 11, book) is Reason.REPLAY


# ---- real nodes on loopback ----------------------------------------------------------------

TOPIC = "shardnet/ads/test"


async def eventually(condition: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    """Poll `condition` until true; fail after `within_s`. (Node state lives in another
    thread, so there is no asyncio event to wait on.)"""
    async with asyncio.timeout(within_s):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def mesh_ready(node, n: int) -> None:
    async def ready() -> bool:
        return len(await node.topic_peers(TOPIC)) >= n

    try:
        await eventually(ready)
    except TimeoutError:
        state = await node.connected_peers(), await node.topic_peers(TOPIC)
        raise AssertionError(f"{node.peer_id}: connected, topic peers = {state}") from None


async def drain(queue: asyncio.Queue[bytes], count: int, within_s: float) -> list[bytes]:
    async with asyncio.timeout(within_s):
        return [await queue.get() for _ in range(count)]


def _non_asyncio_threads() -> set[threading.Thread]:
    # asyncio.to_thread's executor threads belong to the event loop, not to the node.
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


@pytest.fixture
def no_leaked_threads():
    before = _non_asyncio_threads()
    yield
    deadline = time.monotonic() + 5
    while _non_asyncio_threads() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _non_asyncio_threads() - before


@contextlib.asynccontextmanager
async def triangle():
    """A, then B and C bootstrapping from A; A and B subscribe, C only publishes."""
    from shardnet.p2p.node import P2PNode

    async with contextlib.AsyncExitStack() as nodes:
        a = await nodes.enter_async_context(await P2PNode.start(Ed25519PrivateKey.generate()))
        b, c = [
            await nodes.enter_async_context(
                await P2PNode.start(Ed25519PrivateKey.generate(), bootstrap=a.listen_addrs)
            )
            for _ in range(2)
        ]
        queue_a, queue_b = await a.subscribe(TOPIC), await b.subscribe(TOPIC)
        await mesh_ready(a, 1)  # B
        await mesh_ready(b, 1)  # A
        await mesh_ready(c, 1)  # A, which forwards to B
        yield a, b, c, queue_a, queue_b


@pytest.mark.slow
def test_ad_from_c_reaches_b_through_a(no_leaked_threads):
    async def main() -> None:
        async with triangle() as (a, b, c, _, queue_b):
            assert await b.connected_peers() == [a.peer_id], "B knows C only through A"
            key = Ed25519PrivateKey.generate()
            ad = make_ad(key, endpoint="127.0.0.1:7001", timestamp=time.time())
            await c.publish(TOPIC, encode(ad, key))
            [data] = await drain(queue_b, 1, within_s=5)
            assert AdBook().accept(data, time.time()) == ad

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
def test_burst_of_100_arrives_complete(no_leaked_threads, concurrent):
    async def main() -> None:
        async with triangle() as (_, _, c, queue_a, queue_b):
            sent = [b"msg-%03d" % i for i in range(100)]
            if concurrent:  # 100 publishes in flight at once overflow libp2p's 32-slot queues
                await asyncio.gather(*(c.publish(TOPIC, data) for data in sent))
            else:
                for data in sent:
                    await c.publish(TOPIC, data)
            for queue in (queue_b, queue_a):
                received = await drain(queue, 100, within_s=15)
                # Sequential publishes keep their order; concurrent ones have none to keep.
                assert (sorted(received) if concurrent else received) == sent
            assert queue_b.empty(), "nothing delivered twice"

    asyncio.run(main())


@pytest.mark.slow
def test_node_uses_its_own_key_and_closes_cleanly(no_leaked_threads):
    from shardnet.p2p.node import P2PError, P2PNode

    async def main() -> None:
        key = Ed25519PrivateKey.generate()
        async with await P2PNode.start(key) as node:
            assert node.peer_id == peer_id_from_key(public_key_bytes(key))
            assert node.listen_addrs[0].endswith(f"/p2p/{node.peer_id}")
            assert any(t.name.startswith("p2p[") for t in threading.enumerate())
        await node.close()  # idempotent
        with pytest.raises(P2PError):
            await node.publish(TOPIC, b"late")

    asyncio.run(main())


@pytest.mark.slow
def test_bootstrap_peer_that_comes_up_late_is_retried(no_leaked_threads):
    from shardnet.p2p.node import P2PNode

    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        key_a = Ed25519PrivateKey.generate()
        addr_a = f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_from_key(public_key_bytes(key_a))}"
        started = time.monotonic()
        b = await P2PNode.start(
            Ed25519PrivateKey.generate(), bootstrap=[addr_a], bootstrap_wait_s=0.3
        )
        try:
            assert time.monotonic() - started < 3, "an absent bootstrap peer must not block"
            assert await b.connected_peers() == []
            async with await P2PNode.start(key_a, listen_port=port) as a:

                async def connected() -> bool:
                    return await b.connected_peers() == [a.peer_id]

                await eventually(connected)
        finally:
            await b.close()

    asyncio.run(main())


@pytest.mark.slow
def test_close_does_not_wait_for_an_unreachable_bootstrap_peer(no_leaked_threads):
    from shardnet.p2p.node import P2PNode

    async def main() -> None:
        nobody = peer_id_from_key(public_key_bytes(OTHER_KEY))
        node = await P2PNode.start(
            KEY, bootstrap=[f"/ip4/127.0.0.1/tcp/1/p2p/{nobody}"], bootstrap_wait_s=0.1
        )
        async with asyncio.timeout(5):
            await node.close()

    asyncio.run(main())


@pytest.mark.slow
def test_topic_joined_while_the_pubsub_hello_is_in_flight_still_reaches_the_peer(
    monkeypatch, no_leaked_threads
):
    import trio
    from libp2p.network.stream.net_stream import NetStream

    from shardnet.p2p.node import P2PNode

    write = NetStream.write

    async def slow_first_pubsub_write(self, data):
        # Widen py-libp2p's window between building the hello and registering the peer.
        if "meshsub" in str(self.get_protocol()) and not getattr(self, "_delayed", False):
            self._delayed = True
            await trio.sleep(0.5)
        return await write(self, data)

    monkeypatch.setattr(NetStream, "write", slow_first_pubsub_write)

    async def main() -> None:
        async with await P2PNode.start(Ed25519PrivateKey.generate()) as a:
            async with await P2PNode.start(
                Ed25519PrivateKey.generate(), bootstrap=a.listen_addrs
            ) as b:
                await asyncio.sleep(0.1)  # inside the widened window (not a wait for readiness)
                await b.subscribe(TOPIC)
                await mesh_ready(a, 1)

    asyncio.run(main())
