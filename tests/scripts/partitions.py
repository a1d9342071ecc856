"""Tabular with partition_keys: one row per partition, with its key values and row count."""


def run(mini_batch, mini_batch_context):
    key = mini_batch_context.partition_key_value
    label = ",".join(f"{k}={v}" for k, v in sorted(key.items()))
    return [f"{label} rows={len(mini_batch)}"] * len(mini_batch)
