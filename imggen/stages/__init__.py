"""One module per stage: expand, encode, denoise, decode, score."""
