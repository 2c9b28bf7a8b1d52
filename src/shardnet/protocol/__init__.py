"""Wire formats: generated Open Inference Protocol / shardnet.v1 stubs and the tensor codec."""

# Response parameters the coordinator adds to ModelInfer responses (stock clients ignore them).
JOB_ID_PARAM = "shardnet.job_id"
SHARDS_PARAM = "shardnet.shards"  # JSON list: one {shard, rows, worker, attempts, ms} per shard
ESCROW_PARAM = "shardnet.escrow_job"  # request parameter: 0x hex of the bytes32 escrow job id
VERDICTS_PARAM = "shardnet.verdicts"  # JSON list: spot-check disputes decided in the job
RECEIPTS_PARAM = "shardnet.receipts"  # JSON list: the signed receipt of each shard, in order
REQUEST_KEY_PARAM = "shardnet.request_key"  # request: a client's idempotency key (unpaid jobs)
