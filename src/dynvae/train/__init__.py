"""dynvae.train"""
