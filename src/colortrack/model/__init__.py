"""The encoder network, its inputs (frames to features), model files, and device policy."""
