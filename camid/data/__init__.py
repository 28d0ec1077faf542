"""Datasets: folder layouts and CSV manifests with labels, cameras, devices and splits."""
