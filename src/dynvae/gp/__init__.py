"""dynvae.gp"""
