"""Rendering of results: the output layer, tables, figures and reports."""
