"""Peer-to-peer discovery: workers gossip signed capability ads over libp2p gossipsub.

`ads` is pure (parsing, signatures, the subscriber's table); `node` wraps a py-libp2p host.
This package's __init__ imports neither, so importing `shardnet.p2p.ads` never loads libp2p.
"""
