"""Reading and writing what users bring and get: videos, masks, keypoints, DAVIS, files."""
