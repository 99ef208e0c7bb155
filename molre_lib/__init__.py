"""MoLRE head-CT workbook library: adapters, head-CT data, backbones, training, analysis."""

__version__ = "0.1.0"
