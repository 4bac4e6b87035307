"""dynvae.models"""
