"""dynvae.nn"""
