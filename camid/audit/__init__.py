"""Dataset and model audits: bias-check, heatmaps, lr-check, probes."""
