"""`keras-mirasol bench`: speed, MFU and the PyTorch port, in one run.

- `configs`: the benchmarked configurations, including `peer-matched`,
  the twin of the PyTorch port's configuration, and the port's own.
- `measure`: our training step, XLA FLOP count, matmul peak, cached and
  uncached generation, on the current backend.
- `port`: the PyTorch port timed the same way (optional `bench` extra).
- `pipeline`: the tf.data pipeline against the model's consumption.
- `runner`: runs every job in its own process, one at a time, and
  derives the ratios from that one run.
"""
