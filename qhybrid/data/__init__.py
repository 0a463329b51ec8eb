"""Fundus images in: the built-in synthetic generator, loaders for image folders and .npz files,
realistic degradations, and the array <-> tensor transforms. Knows nothing of models."""
