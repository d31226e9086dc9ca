"""Data: sources, downloads, the one image decode path, immutable snapshots, labels and splits."""
