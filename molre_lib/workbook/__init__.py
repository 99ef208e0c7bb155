"""Workbook plumbing: notebook parameter schemas, the papermill runner, sweeps and opening finished runs."""
