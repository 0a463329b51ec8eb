"""qhybrid: hybrid quantum-classical latent diffusion for fundus images."""
__version__ = "0.1.0"
