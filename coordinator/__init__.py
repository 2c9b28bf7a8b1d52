"""The coordinator: accepts jobs over the Open Inference Protocol, shards them across workers."""
