"""The networks: shared layers, quantum layers (QResBlocks and the classical cores that ablate
them), the VAE, the latent denoiser, and the checkpoint format every model loads itself from."""
