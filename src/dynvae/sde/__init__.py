"""dynvae.sde"""
