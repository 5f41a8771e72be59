"""What both stages need and both stage envs can import (numpy, PyAV): decoding audio, hashing, the cache folder."""
