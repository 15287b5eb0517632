"""mixerzoo.medical: models, data and the Lightning task of this domain (in progress)."""
