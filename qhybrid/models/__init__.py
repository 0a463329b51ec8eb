"""The networks: shared layers, quantum layers (QResBlocks and the classical cores that ablate
them), the VAE, the latent denoiser, and the checkpoint format every model loads itself from."""

from qhybrid.models.denoiser import DenoiserConfig, LatentDenoiser
from qhybrid.models.layers import ResBlock
from qhybrid.models.quantum_layers import QResBlock, QuantumBranch
from qhybrid.models.vae import VAE, VAEConfig

__all__ = ["VAE", "DenoiserConfig", "LatentDenoiser", "QResBlock", "QuantumBranch", "ResBlock", "VAEConfig"]
