"""mixerzoo.audio: models, data and the Lightning task of this domain (in progress)."""
