"""shardnet: a decentralized inference network."""

__version__ = "0.1.0"
