"""Clocks, statistics and samplers: how every figure is measured."""
