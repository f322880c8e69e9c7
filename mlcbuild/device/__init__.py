"""Devices over TVM RPC: sessions, probing, tuning, benchmarks."""
