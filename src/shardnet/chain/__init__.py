"""shardnet's chain layer: a local Anvil for dev and tests, contract deployment, and typed
async wrappers (web3.py `AsyncWeb3`) around WorkerRegistry and JobEscrow.

    with Anvil.start(state_path=...) as node:
        dep = await deploy(node.rpc_url, DEV_KEYS[0])
        chain = await Chain.connect(dep, DEV_KEYS[1])
        await chain.open_job(job_id, coordinator, deadline, price_cap, deposit)
"""

from shardnet.chain.anvil import DEV_KEYS, Anvil, find_binary, free_port
from shardnet.chain.contracts import (
    JOB_NONE,
    JOB_OPEN,
    JOB_REFUNDED,
    JOB_SETTLED,
    Chain,
    JobState,
    Receipt,
    Settlement,
    TxResult,
    decode_revert,
    load_artifact,
    sign_receipt,
)
from shardnet.chain.deploy import Deployment, deploy
from shardnet.chain.errors import ChainError, ChainUnavailable, TxReverted

__all__ = [
    "DEV_KEYS",
    "JOB_NONE",
    "JOB_OPEN",
    "JOB_REFUNDED",
    "JOB_SETTLED",
    "Anvil",
    "Chain",
    "ChainError",
    "ChainUnavailable",
    "Deployment",
    "JobState",
    "Receipt",
    "Settlement",
    "TxResult",
    "TxReverted",
    "decode_revert",
    "deploy",
    "find_binary",
    "free_port",
    "load_artifact",
    "sign_receipt",
]
