"""CLI sub-commands, one module each (see dynvae.cli)."""
